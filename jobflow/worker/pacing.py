"""A draining worker gives way to the API's reads (``WORKER_YIELD_LATENCY``).

Before each write command the worker times one read by ``_id``, as the
similar-jobs answer does; when it took longer than the target, reads are
queueing and the worker waits twice as long (at most a second). ``configure``
installs this as the process's gate in ``jobflow.db.commands``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from bson import ObjectId

from jobflow.db import commands
from jobflow.models import Job

MAX_WAIT = 1.0          # seconds of one wait
WAIT_FACTOR = 2.0       # a wait is this many times the probe's time
_PROBE_ID = ObjectId("000000000000000000000000")   # no job has it: a point read by _id, like the API's


@dataclass
class Pacing:
    """This process's pacing: the target (seconds, 0 = off) and what it cost so far."""
    target: float = 0.0
    probes: int = 0
    waits: int = 0
    waited: float = 0.0


state = Pacing()
_lock = threading.Lock()


def configure(target_ms: float) -> None:
    """Pace this process's writes from now on (``WORKER_YIELD_LATENCY``, ms; 0: never wait)."""
    state.target = max(target_ms, 0) / 1000
    commands.set_gate(give_way)


def give_way() -> float:
    """Probe the database before a write command; wait when reads are queueing. Seconds waited."""
    if not state.target:
        return 0.0
    started = time.perf_counter()
    Job._get_collection().find_one({"_id": _PROBE_ID}, {"_id": 1})
    took = time.perf_counter() - started
    with _lock:
        state.probes += 1
    if took <= state.target:
        return 0.0
    pause = min(MAX_WAIT, WAIT_FACTOR * took)
    time.sleep(pause)
    with _lock:
        state.waits += 1
        state.waited += pause
    return pause
