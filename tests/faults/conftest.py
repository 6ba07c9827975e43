"""Fixtures of the fault suite: worker and gunicorn processes, killed at the end if still running.

Its helpers (worker settings, seeders, end-state and list checks, the results file) are in ``tests/support``.
"""
from __future__ import annotations

import sys

import pytest

from tests.support import BIN
from tests.support.processes import Process


@pytest.fixture
def procs(tmp_path):
    """Start child processes (``procs.worker(env)``, ``procs.gunicorn(env)``); any left running are killed."""
    started: list[Process] = []

    class Starter:
        def worker(self, env: dict) -> Process:
            return self._start("worker", [sys.executable, "-m", "flask", "--app", "app", "worker"], env)

        def gunicorn(self, env: dict) -> Process:
            return self._start("gunicorn", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], env)

        def _start(self, name, command, env) -> Process:
            proc = Process(name, command, env, tmp_path / f"{name}{len(started)}.log")
            started.append(proc)
            return proc
    yield Starter()
    for proc in started:
        proc.kill()
