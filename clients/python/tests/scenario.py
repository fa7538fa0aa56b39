"""Scenarios of the Python client, driven by crates/drover-cli/tests/python_client.rs against a
real `drover serve`. Each subcommand prints one JSON line on stdout.

    scenario.py enqueue URL QUEUE COUNT [SLEEP]    enqueue one job, then COUNT-1 in a batch
    scenario.py worker URL QUEUE RECORD [CONCURRENCY [PREFETCH [WAIT]]]  work py.record jobs
                                                    (args: sleep, fail, exit, ignore_cancel;
                                                    env SHUTDOWN_TIMEOUT: the worker's)
    scenario.py complete URL TOKEN                  replay a completion (prints its error)
    scenario.py errors URL                          bad calls: each must raise DroverError
    scenario.py lost-answer URL QUEUE               an enqueue whose answer a proxy drops, and
                                                    one on a connection the server closed idle
"""

import json
import os
import select
import socket
import sys
import threading
import time
import urllib.parse

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


def _answer_dropping_proxy(upstream):
    """A proxy on loopback that passes each request to ``upstream`` and closes the client's
    connection without the answer, as a server killed after its commit, or a load balancer,
    would. Returns its URL."""
    host, port = urllib.parse.urlsplit(upstream).hostname, urllib.parse.urlsplit(upstream).port
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            client, _ = listener.accept()
            request = b""
            while b"\r\n\r\n" not in request:
                request += client.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += client.recv(65536)
            with socket.create_connection((host, port)) as server:
                server.sendall(head.replace(b"Connection: keep-alive", b"Connection: close")
                               + b"\r\n\r\n" + body)
                while server.recv(65536):
                    pass
            client.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def lost_answer(url, queue):
    result = {}
    try:
        Client(_answer_dropping_proxy(url)).enqueue("py.lost", {"n": 1}, queue=queue)
        result["lost"] = "returned"
    except DroverError as err:
        result["lost"] = {"status": err.status, "code": err.code, "message": err.message}
    # The server closes a keep-alive connection idle past its header timeout: the next enqueue
    # goes on a new connection, once.
    client = Client(url)
    client.queues()
    sock = client._local.conn.sock
    result["closed_idle"] = bool(select.select([sock], [], [], 30)[0])
    result["after_idle"] = client.enqueue("py.idle", {"n": 2}, queue=queue)
    print(json.dumps(result))


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
    elif command == "lost-answer":
        lost_answer(rest[0], rest[1])
    else:
        sys.exit(f"unknown scenario {command}")
