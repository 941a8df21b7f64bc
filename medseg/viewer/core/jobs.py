"""Work that outlives a script run: the viewer's inference, run beside the page.

Streamlit stops a script run at its next element whenever the page sends a value (a widget,
or the canvas reporting the volumes it now holds) and starts it again. An inference inside
the run would start over each time, and the page would wait for it before its first image.
A :class:`JobQueue` runs each job once in a worker thread of the server process instead,
keyed like the prediction cache: every run of every session asks for the same job, the page
draws the scan while the model runs, and the finished result is kept like any cached one.

Streamlit-free (the app adds the polling and the progress bar).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from medseg.viewer.core.state import LRUStore

logger = logging.getLogger(__name__)

#: nice value of the worker threads (Linux): the page's own work goes first
WORKER_NICENESS = 5

#: ``work(progress)``: ``progress(done, total)`` reports its steps
Work = Callable[[Callable[[int, int], None]], Any]


@dataclasses.dataclass(eq=False)
class Job:
    """One submitted piece of work, its progress and (once done) its result."""

    label: str
    future: Future = dataclasses.field(default_factory=Future)
    done_steps: int = 0
    total_steps: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    running: bool = False  # False while it waits for its release (``JobQueue.submit(hold=)``)
    gate: threading.Event = dataclasses.field(default_factory=threading.Event)

    def release(self) -> None:
        """Let a held job start now."""
        self.gate.set()

    def report(self, done: int, total: int) -> None:
        self.done_steps, self.total_steps = int(done), int(total)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_steps / self.total_steps) if self.total_steps else 0.0

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> Any:
        """The work's return value (waits up to ``timeout`` s); re-raises what it raised."""
        return self.future.result(timeout)


class JobQueue:
    """Jobs keyed like a cache (the last ``capacity`` kept), run ``workers`` at a time.

    One worker by default: two inferences at once would share the same cores (or GPU memory)
    and both finish later than one after the other. The workers run at a lower CPU priority
    (:func:`lower_priority`), so the server and a browser on the same machine send and draw
    the scan while the model runs on what they leave.
    """

    def __init__(self, capacity: int = 8, workers: int = 1) -> None:
        self._jobs = LRUStore(capacity)
        self._pool = ThreadPoolExecutor(
            workers, thread_name_prefix="medseg-viewer-job", initializer=lower_priority
        )
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Job | None:
        return self._jobs.get(key)

    def submit(
        self,
        key: Hashable,
        work: Work,
        label: str = "",
        *,
        again: bool = False,
        hold: float = 0.0,
    ) -> Job:
        """The job for ``key``: the one already submitted (running or done), or ``work``
        started now. ``again``: replace a finished job (a retry after a failure). ``hold``:
        seconds the work waits for :meth:`Job.release` before it starts anyway (the viewer
        holds the model until the page shows the scan, whose drawing it would slow)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not (again and job.done()):
                return job
            job = Job(label)
            if hold <= 0:
                job.release()

            def run() -> Any:
                job.gate.wait(hold)
                job.started, job.running = time.monotonic(), True
                return work(job.report)

            job.future = self._pool.submit(run)
            self._jobs.put(key, job)  # with its future: a caller never waits on a stand-in
            return job

    def __len__(self) -> int:
        return len(self._jobs)


def lower_priority(niceness: int = WORKER_NICENESS) -> None:
    """Lower the calling thread's CPU priority (Linux, where a thread has its own nice value;
    the threads it starts, e.g. torch's OpenMP workers, inherit it). Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, max(current, niceness))
    except OSError as err:  # e.g. a sandbox that forbids it: run at the normal priority
        logger.debug("could not lower the job thread's priority: %s", err)
