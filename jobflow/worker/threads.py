"""Daemon threads for the worker's calls and periodic jobs, and the signal that work in hand is given up.

A worker gives up what it is doing when its grace period ends or a rollback
comes into force (``Halted``): it stops waiting for a provider call that hangs
and settles what it holds itself. The call may still hang, so it runs in a
daemon thread: a stopping process never waits for it at exit (a thread of
``concurrent.futures`` would keep the process alive until the call times out).
"""
from __future__ import annotations

import atexit
import itertools
import os
import sys
import threading
from concurrent.futures import Executor, Future

from apscheduler.executors.pool import BasePoolExecutor


class Halted(Exception):
    """Work given up: the worker stops past its grace period, or a rollback is in force."""


class DaemonExecutor(Executor):
    """Runs each submitted call in a daemon thread of its own; what is still running at exit is abandoned."""

    def __init__(self, name: str):
        self.name = name
        self._numbers = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Start ``fn(*args, **kwargs)`` in a daemon thread; its future."""
        future: Future = Future()

        def run() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as exc:  # handed to whoever waits on the future
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())
        thread = threading.Thread(target=run, name=f"{self.name}-{next(self._numbers)}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """With ``wait``, join the calls still running; without, leave them (they end with the process)."""
        if wait:
            with self._lock:
                running = list(self._threads)
            for thread in running:
                thread.join()


class DaemonJobExecutor(BasePoolExecutor):
    """APScheduler's executor on daemon threads: one thread per run (``max_instances`` bounds them per job)."""

    def __init__(self):
        super().__init__(DaemonExecutor("job"))


def exit_process(code: int) -> None:
    """End a long-running process (worker, all-in-one) once it has stopped: Python's exit handlers run (logs
    flushed, the embedded database's users lock let go), the C library's do not.

    A daemon thread abandoned in numpy (a refit given up at SIGTERM) leaves OpenBLAS's thread pool in a state
    its own exit handler waits on forever: the process said "stopped" and never ended.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
