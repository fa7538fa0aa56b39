"""Load for `drover serve` over HTTP, standard library only: how fast jobs go in and out.

    python3 clients/python/bench.py drain URL [JOBS] [WORKERS]   lease 100 at a time, complete
                                                                 each batch in one call
    python3 clients/python/bench.py batch URL [JOBS]             POST batches of 1,000

Each worker is a process of its own (the GIL would serialize threads). Prints one JSON line.
Single-job POSTs are measured with `ab` (see the README): Python is slower than the server.
"""

import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from drover import Client  # noqa: E402

QUEUE = "http-bench"


def enqueue(url, jobs):
    client = Client(url)
    started = time.monotonic()
    for start in range(0, jobs, 1000):
        client.enqueue_many([{"kind": "bench.noop", "args": {"i": i}, "queue": QUEUE}
                             for i in range(start, min(jobs, start + 1000))])
    return time.monotonic() - started


def worker(url, done):
    client = Client(url)
    while True:
        leased = client.lease([QUEUE], f"bench-{os.getpid()}", max=100, wait=0.5)
        if not leased:
            return
        client._request("POST", "/api/v1/leases/complete",
                        {"tokens": [job["token"] for job in leased]}, retry=True)
        with done.get_lock():
            done.value += len(leased)


def main():
    command, url = sys.argv[1], sys.argv[2]
    jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 20_000
    if command == "batch":
        secs = enqueue(url, jobs)
        print(json.dumps({"scenario": "http-batch", "jobs": jobs, "secs": round(secs, 3),
                          "jobs_per_sec": round(jobs / secs)}))
        return
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    enqueue(url, jobs)
    done = multiprocessing.Value("l", 0)
    started = time.monotonic()
    procs = [multiprocessing.Process(target=worker, args=(url, done)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    secs = time.monotonic() - started - 0.5  # the last empty long poll
    print(json.dumps({"scenario": "http-drain", "jobs": done.value, "workers": workers,
                      "secs": round(secs, 3), "jobs_per_sec": round(done.value / secs)}))


if __name__ == "__main__":
    main()
