"""Scenarios of the Python client, driven by crates/drover-cli/tests/python_client.rs against a
real `drover serve`. Each subcommand prints one JSON line on stdout.

    scenario.py enqueue URL QUEUE COUNT [SLEEP]    enqueue one job, then COUNT-1 in a batch
    scenario.py worker URL QUEUE RECORD [CONCURRENCY [PREFETCH [WAIT]]]  work py.record jobs
                                                    (args: sleep, fail, exit, ignore_cancel;
                                                    env SHUTDOWN_TIMEOUT: the worker's)
    scenario.py complete URL TOKEN                  replay a completion (prints its error)
    scenario.py errors URL                          bad calls: each must raise DroverError
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from drover import Client, DroverError, Worker  # noqa: E402


def enqueue(url, queue, count, sleep=0.0):
    client = Client(url)
    first = client.enqueue("py.record", {"sleep": sleep, "n": 0}, queue=queue,
                           unique_key="first")
    again = client.enqueue("py.record", {"sleep": sleep}, queue=queue, unique_key="first")
    rest = client.enqueue_many([{"kind": "py.record", "args": {"sleep": sleep, "n": n},
                                 "queue": queue} for n in range(1, count)]) if count > 1 else None
    print(json.dumps({"first": first, "again": again, "rest": rest}))


def worker(url, queue, record, concurrency=1, prefetch=0, wait=1.0):
    timeout = os.environ.get("SHUTDOWN_TIMEOUT")
    w = Worker(Client(url), [queue], name=f"py-{os.getpid()}", concurrency=concurrency,
               prefetch=prefetch, wait=wait,
               shutdown_timeout=float(timeout) if timeout else None)

    def write(event, job):
        with open(record, "a") as f:
            f.write(json.dumps({"event": event, "id": job.id, "attempt": job.attempt,
                                "token": job.token, "pid": os.getpid()}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @w.task("py.record")
    def run(args, job):
        write("start", job)
        job.step("sleeping")
        if args.get("exit"):
            sys.exit(3)
        deadline = time.monotonic() + float(args.get("sleep", 0))
        if args.get("ignore_cancel"):
            time.sleep(float(args.get("sleep", 0)))
        while time.monotonic() < deadline:
            if job.cancelled.wait(0.05):
                if args.get("on_cancel") == "return":
                    write("stopped", job)
                    return
                raise RuntimeError("cancelled")
        if args.get("fail"):
            raise ValueError("asked to fail")
        write("end", job)

    print(json.dumps({"ready": True}), flush=True)
    w.run()
    print(json.dumps({"stopped": True}), flush=True)


def complete(url, token):
    try:
        Client(url).complete(token)
        print(json.dumps({"status": 200}))
    except DroverError as err:
        print(json.dumps({"status": err.status, "code": err.code}))


def errors(url):
    client = Client(url)
    seen = []
    for call in (lambda: client.enqueue("bad kind"),
                 lambda: client.enqueue("ok", args=[1]),
                 lambda: client.job(999999999),
                 lambda: client.jobs(state="sleeping"),
                 lambda: client.enqueue_many([{"kind": "a"}, {"kind": ""}])):
        try:
            call()
            seen.append(None)
        except DroverError as err:
            seen.append({"status": err.status, "code": err.code, "field": err.field})
    # A worker whose requests the server refuses stops instead of asking forever.
    try:
        Worker(client, ["no spaces allowed"], wait=0).run()
        seen.append(None)
    except DroverError as err:
        seen.append({"status": err.status, "code": err.code, "field": err.field})
    print(json.dumps(seen))


def queues(url, name):
    client = Client(url)
    paused = client.pause(name)
    resumed = client.resume(name)
    print(json.dumps({"paused": paused, "resumed": resumed}))


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "enqueue":
        enqueue(rest[0], rest[1], int(rest[2]), float(rest[3]) if len(rest) > 3 else 0.0)
    elif command == "worker":
        worker(rest[0], rest[1], rest[2], int(rest[3]) if len(rest) > 3 else 1,
               int(rest[4]) if len(rest) > 4 else 0, float(rest[5]) if len(rest) > 5 else 1.0)
    elif command == "complete":
        complete(rest[0], rest[1])
    elif command == "errors":
        errors(rest[0])
    elif command == "queues":
        queues(rest[0], rest[1])
    else:
        sys.exit(f"unknown scenario {command}")
