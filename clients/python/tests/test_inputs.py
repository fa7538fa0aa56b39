"""The client's own checks of its input, with no server: ``python3 -m unittest discover -s
clients/python/tests``. What the server refuses is tested against a real one (scenario.py);
these are the mistakes the client must catch itself, because the server's answer to them would
be wrong (one-letter queues) or say nothing useful (a JSON parse error for NaN)."""

import datetime
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from drover import Client, DroverError, Worker  # noqa: E402

# Nothing listens on port 1: a call that gets past the client's checks fails to connect.
NOWHERE = "http://127.0.0.1:1"


def reached_server(call):
    """Whether ``call`` went past the client's checks (it then fails to connect)."""
    try:
        call()
    except DroverError as err:
        return err.code == "unreachable"
    return True


class Queues(unittest.TestCase):
    def worker(self, queues):
        return Worker(Client(NOWHERE), queues)

    def test_a_str_is_one_queue(self):
        self.assertEqual(self.worker("mail2").queues, ["mail2"])

    def test_lists_tuples_and_iterables_of_str(self):
        self.assertEqual(self.worker(["a", "b"]).queues, ["a", "b"])
        self.assertEqual(self.worker(("a",)).queues, ["a"])
        self.assertEqual(self.worker(q for q in ["x", "y"]).queues, ["x", "y"])

    def test_no_queue_is_refused(self):
        for empty in ([], (), iter([])):
            with self.assertRaisesRegex(ValueError, "at least one queue"):
                self.worker(empty)

    def test_items_that_are_not_str_are_refused(self):
        with self.assertRaisesRegex(TypeError, r"queues\[1\] must be a str .*not int: 7"):
            self.worker(["mail", 7])
        with self.assertRaisesRegex(TypeError, "not bytes"):
            self.worker(b"mail")
        with self.assertRaisesRegex(TypeError, "not int"):
            self.worker(3)

    def test_a_dict_is_refused_not_read_as_its_keys(self):
        with self.assertRaisesRegex(TypeError, "queues must be a str or a list of str, not dict"):
            self.worker({"a": 1})


class WorkerCounts(unittest.TestCase):
    def setUp(self):
        self.client = Client(NOWHERE)

    def test_concurrency_must_be_an_int(self):
        for bad in (1.5, 2.0, "4", None, True):
            with self.assertRaisesRegex(TypeError, "concurrency must be an int"):
                Worker(self.client, "q", concurrency=bad)

    def test_concurrency_must_be_at_least_one(self):
        for bad in (0, -3):
            with self.assertRaisesRegex(ValueError, "concurrency must be at least 1"):
                Worker(self.client, "q", concurrency=bad)
        self.assertEqual(Worker(self.client, "q", concurrency=4).concurrency, 4)

    def test_prefetch_must_be_an_int_of_at_least_zero(self):
        for bad in (0.5, "1", False):
            with self.assertRaisesRegex(TypeError, "prefetch must be an int"):
                Worker(self.client, "q", prefetch=bad)
        with self.assertRaisesRegex(ValueError, "prefetch must be at least 0"):
            Worker(self.client, "q", prefetch=-1)
        self.assertEqual(Worker(self.client, "q", prefetch=0).prefetch, 0)

    def test_durations_must_be_numbers(self):
        for name in ("wait", "shutdown_timeout", "cancel_check"):
            for bad in ("5", True):
                with self.assertRaisesRegex(TypeError, f"{name} must be a number of seconds"):
                    Worker(self.client, "q", **{name: bad})
        worker = Worker(self.client, "q", wait=2, shutdown_timeout=0.5, cancel_check=None)
        self.assertEqual((worker.wait, worker.shutdown_timeout, worker.cancel_check),
                         (2, 0.5, None))


class NonFinite(unittest.TestCase):
    def setUp(self):
        self.client = Client(NOWHERE)

    def test_delay_is_refused_by_name(self):
        for bad in (math.nan, math.inf, -math.inf):
            with self.assertRaisesRegex(ValueError, "delay must be a finite number"):
                self.client.enqueue("k", delay=bad)
        self.assertTrue(reached_server(lambda: self.client.enqueue("k", delay=1.5)))

    def test_other_options_are_refused_by_name(self):
        with self.assertRaisesRegex(ValueError, "priority must be a finite number, not nan"):
            self.client.enqueue("k", priority=math.nan)
        with self.assertRaisesRegex(ValueError, "max_attempts must be a finite number"):
            self.client.enqueue("k", max_attempts=math.inf)
        with self.assertRaisesRegex(ValueError, "retry_in must be a finite number"):
            self.client.fail("token", "boom", retry_in=math.nan)
        with self.assertRaisesRegex(ValueError, "wait must be a finite number"):
            self.client.lease(["q"], "w", wait=math.inf)

    def test_nan_in_args_is_refused_with_where_it_is(self):
        with self.assertRaisesRegex(ValueError, r"POST /api/v1/jobs holds nan at "
                                                r"\['args'\]\['ratio'\]\[1\]"):
            self.client.enqueue("k", {"ratio": [1.0, math.nan]})
        with self.assertRaisesRegex(ValueError, r"holds inf at \['jobs'\]\[1\]\['args'\]\['x'\]"):
            self.client.enqueue_many([{"kind": "a"}, {"kind": "b", "args": {"x": math.inf}}])
        with self.assertRaisesRegex(ValueError, r"the args filter holds nan at \['x'\]"):
            self.client.jobs(args={"x": math.nan})

    def test_finite_numbers_go_out(self):
        self.assertTrue(reached_server(lambda: self.client.enqueue("k", {"x": 1e308})))

    def test_worker_durations(self):
        for name in ("shutdown_timeout", "cancel_check"):
            for bad in (math.nan, math.inf):
                with self.assertRaisesRegex(ValueError, f"{name} must be a finite number"):
                    Worker(self.client, "q", **{name: bad})
        with self.assertRaisesRegex(ValueError, "wait must be between 0 and 30"):
            Worker(self.client, "q", wait=math.nan)


class Batches(unittest.TestCase):
    def setUp(self):
        self.client = Client(NOWHERE)

    def test_an_unknown_key_is_named_with_the_job_s_index(self):
        with self.assertRaises(TypeError) as caught:
            self.client.enqueue_many([{"kind": "a"}, {"kind": "b", "bogus": 1}])
        message = str(caught.exception)
        self.assertIn("jobs[1] has unknown key 'bogus'", message)
        self.assertIn("kind, args, queue, priority, max_attempts, delay, run_at, unique_key, "
                      "at_most_once", message)

    def test_the_accepted_keys_are_enqueue_s_options(self):
        import inspect
        import drover
        self.assertEqual(drover._JOB_KEYS, tuple(inspect.signature(drover._job).parameters))

    def test_a_job_without_kind_or_not_a_dict(self):
        with self.assertRaisesRegex(TypeError, r"jobs\[0\] has no 'kind'"):
            self.client.enqueue_many([{"args": {}}])
        with self.assertRaisesRegex(TypeError, r"jobs\[2\] must be a dict, not str"):
            self.client.enqueue_many([{"kind": "a"}, {"kind": "b"}, "c"])

    def test_a_bad_option_is_named_with_the_job_s_index(self):
        with self.assertRaisesRegex(ValueError, r"jobs\[1\]: delay must be a finite number"):
            self.client.enqueue_many([{"kind": "a"}, {"kind": "b", "delay": math.nan}])

    def test_one_job_without_its_list_is_refused_as_such(self):
        with self.assertRaisesRegex(TypeError, r"jobs must be a list of job dicts, not a dict "
                                               r"\(for one job, pass \[job\]\)"):
            self.client.enqueue_many({"kind": "k"})
        for bad in ("k", b"k", None):
            with self.assertRaisesRegex(TypeError, "jobs must be a list of job dicts, not a "
                                                   + type(bad).__name__):
                self.client.enqueue_many(bad)
        self.assertTrue(reached_server(lambda: self.client.enqueue_many(
            {"kind": k} for k in ("a", "b"))))

    def test_every_accepted_key_goes_out(self):
        job = {"kind": "a", "args": {}, "queue": "q", "priority": 1, "max_attempts": 3,
               "delay": 2.0, "run_at": None, "unique_key": "u", "at_most_once": True}
        self.assertTrue(reached_server(lambda: self.client.enqueue_many([job])))


class RunAt(unittest.TestCase):
    def sent(self, run_at):
        import drover
        return drover._job("k", None, run_at=run_at).get("run_at")

    def test_an_aware_datetime_is_sent_in_utc(self):
        utc = datetime.timezone.utc
        self.assertEqual(self.sent(datetime.datetime(2030, 1, 1, 9, tzinfo=utc)),
                         "2030-01-01T09:00:00Z")
        paris = datetime.timezone(datetime.timedelta(hours=1))
        self.assertEqual(self.sent(datetime.datetime(2030, 1, 1, 0, 30, tzinfo=paris)),
                         "2029-12-31T23:30:00Z")

    def test_microseconds_are_kept_when_there_are_some(self):
        at = datetime.datetime(2030, 1, 1, 9, 0, 0, 250000, tzinfo=datetime.timezone.utc)
        self.assertEqual(self.sent(at), "2030-01-01T09:00:00.250000Z")

    def test_a_str_is_sent_as_it_is(self):
        self.assertEqual(self.sent("2030-01-01T10:00:00+01:00"), "2030-01-01T10:00:00+01:00")
        self.assertIsNone(self.sent(None))

    def test_a_naive_datetime_is_refused(self):
        naive = datetime.datetime(2030, 1, 1, 9)
        with self.assertRaisesRegex(ValueError, r"run_at has no time zone: give tzinfo, e\.g\. "
                                                r"datetime\.timezone\.utc"):
            Client(NOWHERE).enqueue("k", run_at=naive)
        with self.assertRaisesRegex(ValueError, r"jobs\[1\]: run_at has no time zone"):
            Client(NOWHERE).enqueue_many([{"kind": "a"}, {"kind": "b", "run_at": naive}])

    def test_other_types_are_refused_by_name(self):
        with self.assertRaisesRegex(TypeError, "run_at must be an RFC 3339 str or a "
                                               "datetime.datetime, not date"):
            Client(NOWHERE).enqueue("k", run_at=datetime.date(2030, 1, 1))
        with self.assertRaisesRegex(TypeError, r"jobs\[0\]: run_at must be .* not int"):
            Client(NOWHERE).enqueue_many([{"kind": "a", "run_at": 1893456000}])

    def test_a_datetime_goes_out(self):
        at = datetime.datetime(2030, 1, 1, 9, tzinfo=datetime.timezone.utc)
        client = Client(NOWHERE)
        self.assertTrue(reached_server(lambda: client.enqueue("k", run_at=at)))
        self.assertTrue(reached_server(lambda: client.enqueue_many([{"kind": "k",
                                                                    "run_at": at}])))


class Tasks(unittest.TestCase):
    def setUp(self):
        self.worker = Worker(Client(NOWHERE), ["q"])

    def test_a_second_handler_for_a_kind_is_refused(self):
        @self.worker.task("a")
        def first(args, job):
            pass

        with self.assertRaisesRegex(ValueError, r"kind 'a' already has a handler "
                                                r"\(.*first\)"):
            @self.worker.task("a")
            def second(args, job):
                pass
        self.assertIs(self.worker._handlers["a"], first)

        @self.worker.task("b")
        def other(args, job):
            pass
        self.assertIs(self.worker._handlers["b"], other)

    def test_task_without_a_kind(self):
        with self.assertRaisesRegex(TypeError, r"task\(\) takes the kind as a str"):
            @self.worker.task
            def handler(args, job):
                pass

    def test_an_empty_kind_is_refused(self):
        with self.assertRaisesRegex(ValueError, "the kind is empty"):
            self.worker.task("")
        self.assertEqual(self.worker._handlers, {})


class Unreachable(unittest.TestCase):
    def test_a_refused_enqueue_says_nothing_was_sent(self):
        with self.assertRaises(DroverError) as caught:
            Client(NOWHERE).enqueue("k", {})
        self.assertEqual(caught.exception.code, "unreachable")
        self.assertIn("refused", caught.exception.message)
        self.assertNotIn("unknown", caught.exception.message)

    def test_a_lease_token_is_kept_out_of_the_message(self):
        # Logged by the worker's warnings: whoever reads the log must not get the lease.
        token = "7-1-c0ffee5ecret"
        with self.assertRaises(DroverError) as caught:
            Client(NOWHERE).heartbeat(token)
        self.assertNotIn("c0ffee5ecret", str(caught.exception))
        self.assertIn("POST /api/v1/leases/…/heartbeat", caught.exception.message)


if __name__ == "__main__":
    unittest.main()
