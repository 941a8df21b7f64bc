"""The viewer's job queue: inference that outlives a Streamlit script run."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from medseg.viewer.core.jobs import JobQueue


def test_a_key_runs_once_while_every_caller_gets_the_same_job() -> None:
    queue = JobQueue()
    gate = threading.Event()
    calls: list[int] = []

    def work(progress):
        calls.append(1)
        progress(1, 4)
        gate.wait(10)
        progress(4, 4)
        return "done"

    first = queue.submit("case", work, "model on case")
    again = queue.submit("case", work)  # a rerun while it runs: no second inference
    assert again is first
    assert not first.done()
    assert queue.get("case") is first
    assert queue.get("other") is None
    gate.set()
    assert first.result(10) == "done"
    assert calls == [1]
    assert first.fraction == 1.0
    assert first.label == "model on case"


def test_again_replaces_a_finished_job_only() -> None:
    queue = JobQueue()
    gate = threading.Event()
    running = queue.submit("k", lambda _p: gate.wait(10))
    assert queue.submit("k", lambda _p: "retry", again=True) is running  # still running
    gate.set()
    running.result(10)
    retried = queue.submit("k", lambda _p: "retry", again=True)
    assert retried is not running
    assert retried.result(10) == "retry"


def test_a_held_job_starts_on_release_or_after_its_hold() -> None:
    queue = JobQueue()
    started = threading.Event()
    held = queue.submit("k", lambda _p: started.set(), hold=30)
    assert not started.wait(0.5)
    assert not held.running
    held.release()
    assert started.wait(10)
    held.result(10)
    assert held.running
    late = queue.submit("other", lambda _p: "anyway", hold=0.2)  # nobody releases it
    assert late.result(10) == "anyway"


def test_an_exception_reaches_the_caller() -> None:
    queue = JobQueue()

    def broken(_progress):
        raise KeyError("bug")

    job = queue.submit("k", broken)
    with pytest.raises(KeyError):
        job.result(10)


def test_old_jobs_are_dropped_past_the_capacity() -> None:
    queue = JobQueue(capacity=2)
    for key in "abc":
        queue.submit(key, lambda _p, key=key: key).result(10)
    assert len(queue) == 2
    assert queue.get("a") is None
    assert queue.get("c").result() == "c"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_jobs_run_below_the_page_s_priority() -> None:
    queue = JobQueue()
    niceness = queue.submit(
        "k", lambda _p: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    ).result(10)
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert niceness >= 5
    assert niceness >= caller
    assert caller < 5 or caller == niceness  # the caller's own priority is left as it was
