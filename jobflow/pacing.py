"""A draining worker gives way to the API's reads.

The embedded database is one process that serves every command, so while a
worker writes lists, vectors and queue items, an API read waits behind them.
Before each write command of a drain (at most 50 documents), the worker reads
one document by ``_id``, as the similar-jobs answer does, and times it. When
that read took longer than ``WORKER_YIELD_LATENCY``, reads are queueing: the
worker waits twice as long as the read took (at most a second) and the reads
catch up. With nobody reading, the probe takes about a millisecond and the
worker never waits; ``0`` turns it off (a dedicated MongoDB, say).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

from bson import ObjectId

from .models import Job

# Documents per command: on the embedded database a read holds every other reader back while it gathers its
# answer, and a write command competes with them for the one process, so no command carries hundreds.
CHUNK = 50
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
T = TypeVar("T")
_lock = threading.Lock()


def configure(target_ms: float) -> None:
    """Pace this process's writes from now on (``WORKER_YIELD_LATENCY``, ms; 0: never wait)."""
    state.target = max(target_ms, 0) / 1000


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


def chunks(items: Sequence) -> Iterator[Sequence]:
    """``items`` CHUNK at a time, one command each (reads; writes go through ``write_chunks``)."""
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def write_chunks(items: Sequence, write: Callable[[Sequence], T]) -> list[T]:
    """``write`` each CHUNK of ``items`` (one command each); before each the process gives way."""
    done = []
    for chunk in chunks(items):
        give_way()
        done.append(write(chunk))
    return done
