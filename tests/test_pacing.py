"""A draining worker gives way to the API's reads: it probes the database before each write command."""
from __future__ import annotations

import time

import pytest

from jobflow.jobs import queue
from jobflow.models import Job
from jobflow.worker import pacing


@pytest.fixture
def paced():
    before = (pacing.state.target, pacing.state.probes, pacing.state.waits, pacing.state.waited)
    pacing.state.probes, pacing.state.waits, pacing.state.waited = 0, 0, 0.0
    yield pacing.state
    pacing.state.target, pacing.state.probes, pacing.state.waits, pacing.state.waited = before


def test_off_means_no_probe_and_no_wait(app, paced):
    pacing.configure(0)
    assert pacing.give_way() == 0.0 and paced.probes == 0 and paced.waits == 0


def test_a_probe_slower_than_the_target_waits_twice_its_time(app, paced):
    pacing.configure(0.001)                      # one microsecond: any round trip to the database is slower
    started = time.perf_counter()
    waited = pacing.give_way()
    took = time.perf_counter() - started
    assert 0 < waited <= pacing.MAX_WAIT and took >= waited
    assert paced.probes == 1 and paced.waits == 1 and paced.waited == pytest.approx(waited)
    pacing.configure(10_000)                     # ten seconds: never slower
    assert pacing.give_way() == 0.0 and paced.probes == 2 and paced.waits == 1


def test_queue_writes_are_paced_a_command_at_a_time(app, paced):
    """Queueing, claiming and completing 120 items are three write commands each (50 items a command), each
    probed."""
    from bson import ObjectId
    pacing.configure(10_000)
    start = paced.probes
    assert queue.enqueue_many([ObjectId() for _ in range(120)]) == 120 and paced.probes - start == 3
    claimed = queue.claim("w1", 120)
    assert len(claimed) == 120 and paced.probes - start == 6
    assert queue.complete([d["_id"] for d in claimed], "w1", queue.QueuePolicy()) == 120 and paced.probes - start == 9
    assert Job._get_collection().find_one({"_id": pacing._PROBE_ID}) is None   # the probe reads no job


def test_a_load_the_database_fails_is_done_again_from_the_start_then_gives_up_with_its_error():
    """A worker's index load that loses its cursor to a database restart starts over (CI: a worker died at start)."""
    from pymongo.errors import CursorNotFound

    from jobflow.db import commands
    tries = []

    def load():
        tries.append(1)
        if len(tries) < 2:
            raise CursorNotFound("cursor id 7 not found", 43)
        return "loaded"
    assert commands.retried(load, "loading", 30) == "loaded" and len(tries) == 2

    def broken():
        raise CursorNotFound("cursor id 7 not found", 43)
    with pytest.raises(CursorNotFound):
        commands.retried(broken, "loading", 0.5)
