"""A client for the Drover job server, in one file, standard library only (Python 3.8+).

Enqueue from any program::

    from drover import Client
    client = Client("http://127.0.0.1:7070", token=None)
    client.enqueue("email.send", {"to": "ada@example.com"}, queue="mail")

Work jobs with the same guarantees as a Rust handler (the lease token fences every write)::

    from drover import Client, Worker
    worker = Worker(Client("http://127.0.0.1:7070"), queues=["mail"], concurrency=4)

    @worker.task("email.send")
    def send(args, job):
        job.step("render")          # a failure records the step it happened in
        ...                          # raise to fail the attempt (retried with backoff)

    worker.run()                     # until SIGTERM or SIGINT: finish, then hand back

A handler that runs long should look at ``job.cancelled`` (a ``threading.Event``): it is set
when an operator cancels the job or when the lease was lost, and the handler should stop (return
or raise): a run that ends after a cancel request is recorded as cancelled, not completed.
"""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import math
import os
import select
import signal
import socket
import threading
import time
import traceback
import urllib.parse
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

__all__ = ["Client", "DroverError", "Job", "Worker"]

log = logging.getLogger("drover")


class DroverError(Exception):
    """An error answer of the server, or a failure to reach it.

    ``status`` is the HTTP status (0 when the server could not be reached), ``code`` the stable
    error code (``invalid_request``, ``not_found``, ``conflict``, ``lease_lost``, …) and
    ``field`` the input field at fault, when there is one.
    """

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None):
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class Client:
    """The Drover HTTP API. Thread-safe: each thread keeps its own keep-alive connection.

    ``url`` is the server's base URL (``http://host:7070``); ``token`` the bearer token, when the
    server requires one (default: the ``DROVER_TOKEN`` environment variable).
    """

    def __init__(self, url: str = "http://127.0.0.1:7070", token: Optional[str] = None,
                 timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._token = token if token is not None else os.environ.get("DROVER_TOKEN")
        self._timeout = timeout
        self._local = threading.local()

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(self, kind: str, args: Optional[Dict[str, Any]] = None, *,
                queue: Optional[str] = None, priority: Optional[int] = None,
                max_attempts: Optional[int] = None, delay: Optional[float] = None,
                run_at: Optional[Union[str, datetime.datetime]] = None,
                unique_key: Optional[str] = None,
                at_most_once: bool = False) -> Dict[str, Any]:
        """Enqueues one job; returns ``{"id", "state", "duplicate"}`` once it is committed.

        ``delay`` is in seconds; ``run_at`` an RFC 3339 time with an offset (a ``str``, sent as
        it is) or a ``datetime.datetime`` with a time zone (sent in UTC, e.g.
        ``2030-01-01T09:00:00Z``; a naive one raises ``ValueError``, since which zone it means is
        a guess the server would refuse to make); ``unique_key`` makes a second enqueue return
        the first job while it is unfinished (an idempotency key).

        An enqueue is sent once: if the connection fails after the request went out, the
        answer is lost and ``DroverError`` (status 0, ``unreachable``) says so, since the job
        may have been committed. Sending it again with a ``unique_key`` cannot make a second
        job while the first is unfinished.
        """
        return self._request("POST", "/api/v1/jobs", _job(
            kind, args, queue=queue, priority=priority, max_attempts=max_attempts,
            delay=delay, run_at=run_at, unique_key=unique_key, at_most_once=at_most_once))

    def enqueue_many(self, jobs: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
        """Enqueues up to 10,000 jobs in one transaction, all or nothing.

        Each job is a dict with ``kind`` and optionally ``args`` and the options of
        :meth:`enqueue`. Returns ``{"jobs": [...], "inserted", "duplicates"}``. Sent once, as
        :meth:`enqueue` is.
        """
        # A dict is iterable (its keys): one job passed without its list would be refused as
        # "jobs[0] must be a dict, not str", naming the wrong mistake.
        if isinstance(jobs, (Mapping, str, bytes, bytearray)) or not hasattr(jobs, "__iter__"):
            raise TypeError("jobs must be a list of job dicts, not a "
                            f"{type(jobs).__name__}"
                            + (" (for one job, pass [job])" if isinstance(jobs, Mapping) else ""))
        body = [_batch_job(index, job) for index, job in enumerate(jobs)]
        return self._request("POST", "/api/v1/jobs/batch", {"jobs": body})

    # -- inspect and act -------------------------------------------------------------------

    def job(self, job_id: int) -> Dict[str, Any]:
        """One job with every field, its attempts' errors and its history."""
        return self._request("GET", f"/api/v1/jobs/{int(job_id)}")

    def jobs(self, *, limit: int = 50, after: Optional[int] = None,
             **filters: Any) -> Dict[str, Any]:
        """A page of jobs, newest first: ``{"jobs": [...], "next": id_or_None}``.

        Filters: ``state``, ``queue``, ``kind``, ``created_after``, ``created_before``,
        ``finished_after``, ``finished_before`` (RFC 3339), ``args`` (a dict the args contain).
        """
        query = {k: v for k, v in filters.items() if v is not None}
        if isinstance(query.get("args"), (dict, list)):
            query["args"] = _dumps(query["args"], "the args filter")
        query["limit"] = limit
        if after is not None:
            query["after"] = after
        return self._request("GET", "/api/v1/jobs?" + urllib.parse.urlencode(query))

    def retry(self, job_id: int) -> Dict[str, Any]:
        """Makes a finished job available again."""
        return self._request("POST", f"/api/v1/jobs/{int(job_id)}/retry")

    def cancel(self, job_id: int) -> Dict[str, Any]:
        """Cancels a waiting job, or asks a running one to stop."""
        return self._request("POST", f"/api/v1/jobs/{int(job_id)}/cancel")

    def discard(self, job_id: int) -> Dict[str, Any]:
        """Discards a waiting job."""
        return self._request("POST", f"/api/v1/jobs/{int(job_id)}/discard")

    def queues(self) -> List[Dict[str, Any]]:
        """Every queue with its counts per state and whether it is paused."""
        return self._request("GET", "/api/v1/queues")

    def pause(self, queue: str) -> Dict[str, Any]:
        """Pauses a queue for every process."""
        return self._request("POST", f"/api/v1/queues/{urllib.parse.quote(queue, safe='')}/pause")

    def resume(self, queue: str) -> Dict[str, Any]:
        """Resumes a paused queue."""
        return self._request("POST", f"/api/v1/queues/{urllib.parse.quote(queue, safe='')}/resume")

    # -- the lease protocol (used by Worker) -------------------------------------------------

    def lease(self, queues: List[str], worker: str, max: int = 1,
              wait: float = 5.0) -> List[Dict[str, Any]]:
        """Leases up to ``max`` jobs, waiting up to ``wait`` seconds (at most 30) for some."""
        _finite("wait", wait)
        answer = self._request("POST", "/api/v1/leases",
                               {"queues": queues, "worker": worker, "max": max, "wait": wait},
                               timeout=self._timeout + wait)
        return answer["jobs"] if answer else []

    def heartbeat(self, token: str, step: Optional[str] = None) -> Dict[str, Any]:
        """Extends a lease; the answer says whether a cancel was requested."""
        return self._request("POST", f"/api/v1/leases/{token}/heartbeat", {"step": step},
                             retry=True)

    def cancel_requests(self, tokens: List[str], *,
                        timeout: Optional[float] = None) -> List[str]:
        """Which of ``tokens`` (at most 1,000) belong to jobs an operator asked to cancel. A
        cheap read that renews nothing, for checking more often than the heartbeat. With a
        ``timeout`` it is tried once, within it (a check missed is made again soon)."""
        answer = self._request("POST", "/api/v1/leases/cancel-requests",
                               {"tokens": list(tokens)}, timeout=timeout,
                               retry=timeout is None)
        return answer["cancel_requested"]

    def complete(self, token: str, step: Optional[str] = None) -> Dict[str, Any]:
        """Records that a leased run succeeded."""
        return self._request("POST", f"/api/v1/leases/{token}/complete", {"step": step},
                             retry=True)

    def complete_many(self, tokens: List[str]) -> List[Dict[str, Any]]:
        """Records that many leased runs succeeded, in one call and one transaction (at most
        1,000). One result per token, in order: ``{"token", "done"}``, or ``{"token", "error"}``
        with the error code (``lease_lost``, ``not_found``) when that run was not recorded."""
        return self._request("POST", "/api/v1/leases/complete", {"tokens": list(tokens)},
                             retry=True)

    def wake(self, worker: str) -> Dict[str, Any]:
        """Ends the waiting lease requests of ``worker`` at once (they answer with no job, or
        with the jobs they had already leased): for a worker that is stopping."""
        return self._request("POST", "/api/v1/leases/wake", {"worker": worker})

    def fail(self, token: str, error: str, *, step: Optional[str] = None,
             retry_in: Optional[float] = None, discard: bool = False) -> Dict[str, Any]:
        """Records a failed attempt (retried with backoff while attempts are left)."""
        body = {"error": error, "step": step, "discard": discard}
        if retry_in is not None:
            body["retry_in"] = _finite("retry_in", retry_in)
        return self._request("POST", f"/api/v1/leases/{token}/fail", body, retry=True)

    def hand_back(self, token: str, started: bool = False) -> Dict[str, Any]:
        """Gives a leased run back unfinished; its attempt is not used."""
        return self._request("POST", f"/api/v1/leases/{token}/hand-back",
                             {"started": started}, retry=True)

    # -- transport -----------------------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None and _closed_by_peer(conn.sock):
            # The server (its idle timeout) or a proxy closed this keep-alive connection: a
            # request sent on it would fail without saying whether it arrived. A new one.
            self._drop_connection()
            conn = None
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def _request(self, method: str, path: str, body: Any = None, *,
                 timeout: Optional[float] = None, retry: bool = False) -> Any:
        """One call. Calls that are safe to repeat (every call about a lease token: the server
        answers a repeat as the first) are retried when the connection fails, and a GET once;
        any other call is sent once, since a failure after it went out does not say whether the
        server acted on it (an enqueue retried then could make the job twice)."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = _dumps(body, f"the body of {method} {_shown(path)}").encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        attempts = 5 if retry else 2 if method == "GET" else 1
        for attempt in range(attempts):
            conn = self._connection(timeout or self._timeout)
            try:
                conn.request(method, self._prefix + path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as err:
                self._drop_connection()
                if attempt + 1 < attempts:
                    time.sleep(min(0.1 * 2 ** attempt, 2.0))
                    continue
                # A refused connection or an unknown host sent nothing: the server did not act.
                unsent = isinstance(err, (ConnectionRefusedError, socket.gaierror))
                unknown = "" if retry or method == "GET" or unsent else (
                    "; the answer was lost, so whether the server acted on the request is "
                    "unknown")
                raise DroverError(0, "unreachable",
                                  f"{method} {_shown(path)}: {err}{unknown}") from err
            if response.status == 204:
                return None
            try:
                decoded = json.loads(payload) if payload else None
            except ValueError:
                decoded = None
            if 200 <= response.status < 300:
                return decoded
            error = (decoded or {}).get("error", {}) if isinstance(decoded, dict) else {}
            if response.status in (502, 503, 504) and retry and attempt + 1 < attempts:
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
                continue
            raise DroverError(response.status, error.get("code", "http_error"),
                              error.get("message", payload.decode(errors="replace")[:500]),
                              error.get("field"))
        raise AssertionError("unreachable")


def _shown(path: str) -> str:
    """A request path fit for an error message or a log: without its query, and with a lease
    token cut out (it lets whoever holds it complete or fail the job)."""
    path = path.split("?")[0]
    prefix = "/api/v1/leases/"
    if path.startswith(prefix):
        token, _, rest = path[len(prefix):].partition("/")
        if token and rest:
            return f"{prefix}…/{rest}"
    return path


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle connection's peer has closed it: readable with nothing asked means an
    end of stream (or bytes no request asked for, which make it as unusable)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _job(kind: str, args: Optional[Dict[str, Any]], *, queue: Optional[str] = None,
         priority: Optional[int] = None, max_attempts: Optional[int] = None,
         delay: Optional[float] = None,
         run_at: Optional[Union[str, datetime.datetime]] = None,
         unique_key: Optional[str] = None, at_most_once: bool = False) -> Dict[str, Any]:
    job: Dict[str, Any] = {"kind": kind, "args": {} if args is None else args}
    for key, value in (("queue", queue), ("priority", _finite("priority", priority)),
                       ("max_attempts", _finite("max_attempts", max_attempts)),
                       ("delay_seconds", _finite("delay", delay)),
                       ("run_at", _run_at(run_at)), ("unique_key", unique_key)):
        if value is not None:
            job[key] = value
    if at_most_once:
        job["delivery"] = "at-most-once"
    return job


#: The keys a job of ``enqueue_many`` may have: the parameters of ``_job``.
_JOB_KEYS = ("kind", "args", "queue", "priority", "max_attempts", "delay", "run_at",
             "unique_key", "at_most_once")


def _batch_job(index: int, job: Any) -> Dict[str, Any]:
    """One job of ``enqueue_many``. Its errors say which job is wrong: a batch is built by a
    loop, often of thousands, and a bare "unexpected keyword argument" points at none of them."""
    where = f"jobs[{index}]"
    if not isinstance(job, Mapping):
        raise TypeError(f"{where} must be a dict, not {type(job).__name__}")
    unknown = [key for key in job if key not in _JOB_KEYS]
    if unknown:
        raise TypeError(f"{where} has unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; the accepted keys are "
                        f"{', '.join(_JOB_KEYS)}")
    if "kind" not in job:
        raise TypeError(f"{where} has no 'kind'")
    try:
        return _job(job["kind"], job.get("args"),
                    **{k: v for k, v in job.items() if k not in ("kind", "args")})
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    except TypeError as err:
        raise TypeError(f"{where}: {err}") from None


def _finite(name: str, value: Any) -> Any:
    """``value``, unless it is NaN or infinite: refused here, by name, because JSON cannot
    carry it and the server could only answer with a parse error naming neither."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return value


def _run_at(value: Any) -> Optional[str]:
    """``run_at`` as the server reads it: a ``str`` as it is (the server checks it), a
    ``datetime`` in RFC 3339, in UTC. A naive ``datetime`` is refused rather than read as local
    time: the server refuses a time without an offset for the same reason (the zone would be a
    guess, and a wrong one runs the job hours early or late)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, datetime.datetime):
        # A ``date`` (no time of day) or a number (no unit) says too little to be a time.
        raise TypeError("run_at must be an RFC 3339 str or a datetime.datetime, "
                        f"not {type(value).__name__}: {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"run_at has no time zone: give tzinfo, e.g. datetime.timezone.utc "
                         f"(not {value!r})")
    try:
        utc = value.astimezone(datetime.timezone.utc)
    except OverflowError:
        raise ValueError(f"run_at is out of range once in UTC: {value!r}") from None
    # By hand, not isoformat(): the server wants seconds and an offset; "Z" is its shortest.
    text = (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
            f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def _dumps(value: Any, what: str) -> str:
    """The JSON text of ``value``. Python would write NaN and Infinity, which are not JSON (the
    server refuses the whole body with a parse error): refuse them here, and say where they
    are, since they usually hide deep in a job's args."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError as err:
        found = _non_finite(value, "", set())
        if found is None:
            raise ValueError(f"{what} cannot be sent as JSON: {err}") from None
        path, number = found
        raise ValueError(f"{what} holds {number!r} at {path or 'its top'}: JSON has no NaN or "
                         f"infinity (send null, a string, or a finite number)") from None


def _non_finite(value: Any, path: str, seen: set) -> Optional[tuple]:
    """Where in ``value`` the first NaN or infinite float is (``['args']['x'][2]``) and what it
    is; ``seen`` stops at a container met before (json itself refuses cycles)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        items: Iterable[Any] = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    if id(value) in seen:
        return None
    seen.add(id(value))
    for key, item in items:
        found = _non_finite(item, f"{path}[{key!r}]", seen)
        if found is not None:
            return found
    return None


def _until(give_up_at: Callable[[], Optional[float]], call: Callable[[], Any]) -> Any:
    """Makes ``call``, and again with backoff while the server cannot be reached (or answers
    that it is unavailable), until ``give_up_at()`` (monotonic seconds, asked after each
    failure; ``None``: not yet); then raises its error."""
    pause = 0.25
    while True:
        try:
            return call()
        except DroverError as err:
            limit = give_up_at()
            if (err.status not in (0, 502, 503, 504)
                    or (limit is not None and time.monotonic() + pause >= limit)):
                raise
            log.info("server unavailable (%s); trying again in %.2gs", err, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


class Job:
    """A leased job, as a handler sees it."""

    def __init__(self, leased: Dict[str, Any]):
        self.id: int = leased["id"]
        self.kind: str = leased["kind"]
        self.queue: str = leased["queue"]
        self.args: Dict[str, Any] = leased["args"]
        self.attempt: int = leased["attempt"]
        self.max_attempts: int = leased["max_attempts"]
        self.token: str = leased["token"]
        #: Set when an operator cancelled the job, or the lease was lost: stop soon.
        self.cancelled = threading.Event()
        self.lease_lost = False
        self._step: Optional[str] = None
        self._lease_seconds = max(0.5, float(leased["lease_seconds"]))
        self._renewed(time.monotonic())

    def _renewed(self, at: float) -> None:
        """The lease was granted or extended at ``at`` (monotonic seconds)."""
        self._renew_at = at + self._lease_seconds / 3
        #: The lease ends then (as last renewed); after it the server may rescue the job.
        self._expires_at = at + self._lease_seconds

    def step(self, name: str) -> None:
        """Names the step the run has reached; sent with the next heartbeat, and recorded with a
        failure."""
        self._step = name


Handler = Callable[[Dict[str, Any], Job], Any]


def _queue_names(queues: Union[str, Iterable[str]]) -> List[str]:
    """The queue names of a ``Worker``. A ``str`` is one name: iterating it would lease from
    one-letter queues, silently."""
    if isinstance(queues, str):
        return [queues]
    # A dict iterates its keys: {"mail": 2} would lease from "mail" and drop the 2 without a
    # word, whatever the 2 was meant to be (a weight, a concurrency).
    if isinstance(queues, (bytes, bytearray, Mapping)):
        raise TypeError(f"queues must be a str or a list of str, not {type(queues).__name__}")
    try:
        names = list(queues)
    except TypeError:
        raise TypeError("queues must be a str or a list of str, "
                        f"not {type(queues).__name__}") from None
    if not names:
        raise ValueError("a worker needs at least one queue (queues is empty)")
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"queues[{index}] must be a str (a queue name), "
                            f"not {type(name).__name__}: {name!r}")
    return names


def _whole(name: str, value: Any, least: int) -> None:
    """Refuses a count of the ``Worker`` that is not a whole number of at least ``least``,
    now: a float would only fail inside ``run()`` (``range(1.5)``, a lease of 1.5 jobs), far
    from the mistake. A bool is refused too: ``True`` threads is a slip, not a count."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}: {value!r}")
    if value < least:
        raise ValueError(f"{name} must be at least {least}, not {value!r}")


def _number(name: str, value: Any) -> None:
    """Refuses a duration of the ``Worker`` that is not an int or a float, naming it: a str
    would fail in a comparison that names neither, and a bool or a ``Decimal`` would be accepted
    here and refused by the server (or by ``json``) once ``run()`` sends it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds (an int or a float), "
                        f"not {type(value).__name__}: {value!r}")


class Worker:
    """Leases jobs of some queues and runs the handler registered for each kind.

    ``queues`` is a list of queue names, or one name as a ``str`` (``"mail"`` is the queue
    ``mail``, not the queues ``m``, ``a``, ``i``, ``l``).

    ``concurrency`` jobs run at once, each in a thread of its own; up to ``prefetch`` more are
    leased ahead, so short jobs do not wait for a round trip each. Leases are renewed by a
    heartbeat thread at a third of their length. A handler that returns completes its job; one
    that raises fails the attempt (the server retries it with backoff while attempts are left).
    A job of an unknown kind is discarded with the reason.

    Successes are recorded by a completer thread: when several jobs finish while one completion
    is on its way, the next call records them all together (``POST /api/v1/leases/complete``,
    one transaction), so short jobs cost the server one commit per batch rather than per job. A
    job's ``step`` is sent with a completion recorded alone, not with one recorded in a batch.

    ``run()`` stops on SIGTERM or SIGINT (or :meth:`stop`): it leases nothing more, ends its own
    waiting lease request at once (``POST /api/v1/leases/wake`` from another connection, so that
    jobs the request had already leased are still delivered and handed back), lets the running
    jobs finish (for at most ``shutdown_timeout`` seconds when it is set: the runs still going
    then are handed back, their attempt not used), records their outcomes, hands back the jobs
    leased but not started (their attempt is not used), and returns.

    An operator's cancel reaches a running handler (``job.cancelled``) within ``cancel_check``
    seconds: the heartbeat thread asks which running jobs were cancelled that often, in one
    cheap request for all of them (``None``: only at heartbeats, every third of the lease).

    While the server cannot be reached (a restart, a deploy), jobs keep running and their
    heartbeats and outcomes are sent again with backoff until it answers, however long that
    takes: a restarted server waits a lease before rescuing expired ones, so the outcomes of
    jobs that finished during the outage are recorded and the jobs do not run again. Once
    stopping, an outcome is offered for :attr:`OUTCOME_PATIENCE` seconds at most.
    """

    #: Most completions recorded in one call (the server's limit).
    MAX_COMPLETE_BATCH = 1000

    #: Once stopping, how many seconds an outcome is still offered to a server that cannot be
    #: reached (at least until its lease ends).
    OUTCOME_PATIENCE = 30.0

    def __init__(self, client: Client, queues: Union[str, Iterable[str]], *,
                 name: Optional[str] = None,
                 concurrency: int = 1, prefetch: int = 0, wait: float = 5.0,
                 shutdown_timeout: Optional[float] = None, cancel_check: Optional[float] = 1.0):
        _whole("concurrency", concurrency, 1)
        _whole("prefetch", prefetch, 0)
        _number("wait", wait)
        if not 0 <= wait <= 30:
            raise ValueError("wait must be between 0 and 30 seconds (the server's limit)")
        if shutdown_timeout is not None:
            _number("shutdown_timeout", shutdown_timeout)
        if cancel_check is not None:
            _number("cancel_check", cancel_check)
        if shutdown_timeout is not None and not 0 <= shutdown_timeout < math.inf:
            raise ValueError("shutdown_timeout must be a finite number of seconds, at least 0 "
                             f"(or None: as long as the jobs take), not {shutdown_timeout!r}")
        if cancel_check is not None and not 0.1 <= cancel_check < math.inf:
            raise ValueError("cancel_check must be a finite number of seconds, at least 0.1 "
                             f"(or None), not {cancel_check!r}")
        #: Seconds between checks for cancel requests of running jobs (``None``: heartbeats only).
        self.cancel_check = cancel_check
        #: Once stopping, how long running jobs get to finish before they are handed back
        #: (``None``: as long as they take).
        self.shutdown_timeout = shutdown_timeout
        self.prefetch = prefetch
        self.client = client
        self.queues = _queue_names(queues)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.concurrency = concurrency
        self.wait = wait
        self._handlers: Dict[str, Handler] = {}
        self._stopping = threading.Event()
        # When stop() was first called (monotonic seconds).
        self._stopped_at: Optional[float] = None
        self._lock = threading.Condition()
        self._waiting: List[Job] = []
        # By token, not job id: a job rescued from this worker may be leased by it again while
        # the first run is still ending, and the two runs must not share an entry.
        self._running: Dict[str, Job] = {}
        # Succeeded runs not yet recorded, and whether the completer is recording some now.
        self._succeeded: List[Job] = []
        self._completing = False
        # Clear while a lease request is on its way; set when it has answered.
        self._poll_done = threading.Event()
        self._poll_done.set()
        self._waker: Optional[threading.Thread] = None

    def task(self, kind: str) -> Callable[[Handler], Handler]:
        """Registers the decorated function ``fn(args, job)`` as the handler of ``kind``.

        A kind has one handler: registering a second raises ``ValueError`` rather than silently
        replacing the first (two modules that both claim a kind is a bug to see at start-up).
        """
        if not isinstance(kind, str):
            # ``@worker.task`` without the kind: the function would become the kind, and the
            # handler a decorator no job ever reaches.
            raise TypeError(f"task() takes the kind as a str (@worker.task(\"kind\")), "
                            f"not {type(kind).__name__}")
        if not kind:
            # No job can have the empty kind (the server refuses it): the handler would never run.
            raise ValueError("task() needs a kind: the kind is empty")

        def register(fn: Handler) -> Handler:
            first = self._handlers.get(kind)
            if first is not None:
                raise ValueError(f"kind {kind!r} already has a handler "
                                 f"({getattr(first, '__qualname__', first)!s}): "
                                 "a kind has one handler")
            self._handlers[kind] = fn
            return fn
        return register

    def stop(self) -> None:
        """Asks :meth:`run` to stop gracefully. Safe to call from a signal handler."""
        first = not self._stopping.is_set()
        if first:
            self._stopped_at = time.monotonic()
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        if first and not self._poll_done.is_set():
            # The lease request blocks the thread that runs the signal handler: end it from
            # another thread, with a connection of its own.
            self._waker = threading.Thread(target=self._wake_poll, name="drover-waker",
                                           daemon=True)
            self._waker.start()

    def _wake_poll(self) -> None:
        # A wake-up that reaches the server before the request it is meant to end ends
        # nothing: repeat it while the request is still waiting.
        while not self._poll_done.is_set():
            try:
                self.client.wake(self.name)
            except DroverError as err:
                log.warning("cannot end the waiting lease request: %s", err)
                return
            self._poll_done.wait(0.2)

    def run(self) -> None:
        """Works until stopped. See the class documentation."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self.stop())
        threads = [threading.Thread(target=self._execute, name=f"drover-{i}", daemon=True)
                   for i in range(self.concurrency)]
        beat = threading.Thread(target=self._heartbeats, name="drover-heartbeat", daemon=True)
        completer = threading.Thread(target=self._complete_loop, name="drover-completer",
                                     daemon=True)
        for thread in threads + [beat, completer]:
            thread.start()
        try:
            self._lease_loop()
        finally:
            self.stop()
            deadline = (None if self.shutdown_timeout is None
                        else time.monotonic() + self.shutdown_timeout)
            for thread in threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if any(thread.is_alive() for thread in threads):
                self._abandon_running()
            # The completer records what is left, then ends (it sees _stopping).
            with self._lock:
                self._lock.notify_all()
            completer.join()
            self._hand_back_waiting()
            beat.join()
            if self._waker is not None:
                self._waker.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _lease_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                free = (self.concurrency + self.prefetch
                        - len(self._waiting) - len(self._running))
                if free <= 0:
                    self._lock.wait(timeout=1.0)
                    continue
            self._poll_done.clear()
            try:
                if self._stopping.is_set():
                    break
                leased = self.client.lease(self.queues, self.name, max=free, wait=self.wait)
            except DroverError as err:
                if err.status in (400, 401, 403, 404, 422):
                    # Asking again cannot help (a wrong token, a refused request): say so.
                    log.error("cannot lease jobs: %s; stopping", err)
                    raise
                log.warning("cannot lease jobs: %s; retrying", err)
                self._stopping.wait(1.0)
                continue
            finally:
                self._poll_done.set()
            with self._lock:
                self._waiting.extend(Job(j) for j in leased)
                self._lock.notify_all()

    def _next(self) -> Optional[Job]:
        with self._lock:
            while not self._waiting:
                if self._stopping.is_set():
                    return None
                self._lock.wait(timeout=1.0)
            if self._stopping.is_set():
                return None
            job = self._waiting.pop(0)
            self._running[job.token] = job
            return job

    def _execute(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                self._run_one(job)
            finally:
                with self._lock:
                    self._running.pop(job.token, None)
                    self._lock.notify_all()

    def _run_one(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        try:
            if handler is None:
                reason = f"unknown kind {job.kind!r}: no handler in worker {self.name}"
                _until(self._outcome_limit(job),
                       lambda: self.client.fail(job.token, reason, discard=True))
                return
            try:
                handler(job.args, job)
            except BaseException as exc:  # noqa: B036 - SystemExit too: it must not end the thread
                if not job.lease_lost:
                    # The first line sums the failure up (lists show it); the traceback's end
                    # says where.
                    message = (f"{type(exc).__name__}: {exc}"[:500] + "\n"
                               + traceback.format_exc(limit=5)[-3500:])
                    _until(self._outcome_limit(job),
                           lambda: self.client.fail(job.token, message, step=job._step))
                return
            if job.lease_lost:
                return
            if job.cancelled.is_set():
                # It stopped early, as asked: the server records a failure of a job whose
                # cancel was requested as cancelled.
                _until(self._outcome_limit(job), lambda: self.client.fail(
                    job.token, "stopped after a cancel request", step=job._step))
                return
            with self._lock:
                self._succeeded.append(job)
                self._lock.notify_all()
        except DroverError as err:
            # A lost lease: the job was rescued and runs elsewhere; this run's outcome is void.
            log.warning("job %s: outcome not recorded: %s", job.id, err)

    def _complete_loop(self) -> None:
        """Records the succeeded runs: everything that finished while the last call was on its
        way goes in the next one."""
        while True:
            with self._lock:
                while not self._succeeded:
                    # Ends once the executors have stopped and nothing is left to record.
                    if self._stopping.is_set() and not self._running:
                        return
                    self._lock.wait(timeout=1.0)
                batch = self._succeeded[:self.MAX_COMPLETE_BATCH]
                del self._succeeded[:len(batch)]
            self._record(batch)

    def _outcome_limit(self, *jobs: Job) -> Callable[[], Optional[float]]:
        """Until when the outcome of ``jobs`` is offered again to a server that cannot be
        reached: while the worker runs, until the server answers, even past the leases' end —
        the server takes the outcome of an expired lease until the job is rescued, and after an
        outage it waits a lease before rescuing, so that the owners can report first. Once
        stopping, until the last lease ends or :attr:`OUTCOME_PATIENCE` after the stop,
        whichever is later; then the outcome is dropped and the job runs again."""
        def limit() -> Optional[float]:
            stopped_at = self._stopped_at
            if stopped_at is None:
                return None
            return max(max(job._expires_at for job in jobs), stopped_at + self.OUTCOME_PATIENCE)
        return limit

    def _record(self, batch: List[Job]) -> None:
        limit = self._outcome_limit(*batch)
        try:
            if len(batch) == 1:
                job = batch[0]
                try:
                    _until(limit, lambda: self.client.complete(job.token, step=job._step))
                except DroverError as err:
                    # A lost lease: the job was rescued and runs elsewhere; this run is void.
                    log.warning("job %s: outcome not recorded: %s", job.id, err)
                return
            results = _until(limit, lambda: self.client.complete_many(
                [job.token for job in batch]))
        except DroverError as err:
            log.warning("%d completions not recorded (their leases will expire and the jobs "
                        "run again): %s", len(batch), err)
            return
        for job, result in zip(batch, results):
            if result.get("error"):
                log.warning("job %s: outcome not recorded: %s", job.id, result["error"])

    def _heartbeats(self) -> None:
        next_check = time.monotonic()
        while not (self._stopping.is_set() and not self._running):
            with self._lock:
                due = [j for j in list(self._running.values()) + self._waiting
                       if j._renew_at <= time.monotonic()]
            for job in due:
                try:
                    sent = time.monotonic()
                    answer = self.client.heartbeat(job.token, step=job._step)
                    job._renewed(sent)
                    if answer.get("cancel_requested"):
                        job.cancelled.set()
                except DroverError as err:
                    if err.status == 409:
                        job.lease_lost = True
                        job.cancelled.set()
                    else:
                        job._renew_at = time.monotonic() + 1.0
                        log.warning("job %s: heartbeat failed: %s", job.id, err)
            # After the heartbeats, and bounded: a slow check must not delay a lease's renewal.
            if self.cancel_check is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + self.cancel_check
                self._check_cancels()
            time.sleep(0.2)

    def _check_cancels(self) -> None:
        with self._lock:
            running = [j for j in self._running.values() if not j.cancelled.is_set()]
        if not running:
            return
        try:
            asked = set(self.client.cancel_requests([j.token for j in running[:1000]],
                                                    timeout=min(2 * self.cancel_check, 5.0)))
        except DroverError as err:
            if err.status == 404:
                # A server from before this request: heartbeats still carry cancels.
                log.info("the server does not answer cancel checks; cancels arrive with "
                         "heartbeats")
                self.cancel_check = None
            else:
                log.warning("cancel check failed: %s", err)
            return
        for job in running:
            if job.token in asked:
                job.cancelled.set()

    def _abandon_running(self) -> None:
        """Hands back the runs still going at the shutdown timeout, without using their attempt
        (an at-most-once job is discarded instead, the server's rule for a started run). Their
        threads are left to end with the process; what they return is not recorded."""
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
            self._lock.notify_all()
        for job in running:
            job.lease_lost = True
            job.cancelled.set()
            try:
                _until(lambda: job._expires_at,
                       lambda: self.client.hand_back(job.token, started=True))
                log.warning("job %s: still running at the shutdown timeout; handed back", job.id)
            except DroverError as err:
                log.warning("job %s: could not hand back (its lease will expire): %s",
                            job.id, err)

    def _hand_back_waiting(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for job in waiting:
            try:
                self.client.hand_back(job.token, started=False)
            except DroverError as err:
                log.warning("job %s: could not hand back (its lease will expire): %s",
                            job.id, err)
