"""The client's own checks of its input, with no server: ``python3 -m unittest discover -s
clients/python/tests``. What the server refuses is tested against a real one (scenario.py);
these are the mistakes the client must catch itself, because the server's answer to them would
be wrong (one-letter queues) or say nothing useful (a JSON parse error for NaN)."""

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

    def test_every_accepted_key_goes_out(self):
        job = {"kind": "a", "args": {}, "queue": "q", "priority": 1, "max_attempts": 3,
               "delay": 2.0, "run_at": None, "unique_key": "u", "at_most_once": True}
        self.assertTrue(reached_server(lambda: self.client.enqueue_many([job])))


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


if __name__ == "__main__":
    unittest.main()
