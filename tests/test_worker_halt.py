"""A worker gives up the work in hand when its grace period ends or a rollback comes into force: a provider call
that hangs, a recompute between blocks; a stopping worker starts no fit. The items it held go back to pending."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from jobflow.jobs import queue, rollback
from jobflow.models import Lease, QueueItem, WorkerStatus
from jobflow.ops import recompute
from jobflow.similarity import stored_correction
from jobflow.worker.loop import Worker
from tests.support import KEY
from tests.support.openai_server import EmbeddingsServer
from tests.support.seeding import add_jobs, bilingual_postings
from tests.support.waiting import seconds_until, wait_until

ROLLBACK_PROMISE = 5.0      # seconds: a rollback is obeyed within this long, whatever the worker is doing


@pytest.fixture
def hanging(make_app):
    """A provider whose calls hang until it stops (timeout 60 s, the specification's), and a worker's settings."""
    with EmbeddingsServer() as server:
        server.fail_always("hang")
        settings = dict(make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url,
                                 OPENAI_API_TIMEOUT=60000, EMBEDDING_WORKER_INTERVAL=100).config)
        yield server, settings
    rollback.set_level(0)


def jobs(n: int) -> list[dict]:
    return [{"title": f"Warehouse operator {i}", "description": f"Forklift shifts in depot {i}."} for i in range(n)]


def item_states() -> list[tuple[str, int]]:
    """Each queue item's status and attempts."""
    return sorted((d["status"], d["attempts"]) for d in QueueItem._get_collection().find({}, {"status": 1, "attempts": 1}))


def status(worker: Worker) -> dict:
    return WorkerStatus._get_collection().find_one({"workerId": worker.worker_id}) or {}


def calls_running() -> bool:
    return any(t.name.startswith("embed") for t in threading.enumerate())


def test_stop_gives_up_a_hung_provider_call_at_the_grace_deadline(hanging, caplog):
    server, settings = hanging
    caplog.set_level(logging.INFO, logger="jobflow")
    add_jobs(jobs(3))
    worker = Worker(settings)
    worker.start()
    wait_until("a provider call in flight", lambda: server.in_flight and queue.counts()["processing"] == 3, 30)
    started = time.monotonic()
    worker.stop(timeout=1.0)
    took = time.monotonic() - started
    assert took < 1.0 + 5, took                                 # the grace period, not the provider's 60 s
    assert item_states() == [("pending", 0)] * 3                      # given back, the attempt refunded
    assert status(worker)["state"] == "stopped"
    server.stop()                                               # the abandoned call ends now, unanswered
    wait_until("the abandoned call to end", lambda: not calls_running(), 30)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("jobflow")]
    last = max(n for n, line in enumerate(lines) if "stopped (grace period over; 3 items given back)" in line)
    assert lines[last + 1:] == []                               # nothing failed or done after "stopped"
    assert item_states() == [("pending", 0)] * 3


def test_a_stopping_worker_starts_no_fit(make_app, caplog):
    with EmbeddingsServer(dimensions=64, models=["small-64"]) as server:    # 64 dimensions: a fit takes a second
        settings = dict(make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url,
                                 OPENAI_EMBEDDING_MODEL="small-64").config)
        add_jobs(bilingual_postings())                          # 24 English and 24 Albanian postings
        worker = Worker(settings)
        worker.start(scheduler=False)
        assert worker.process_queue() == 48
    worker.lists.churn = len(worker.lists)                      # as if every job came or went: a refit is due
    assert worker.lists.refit_due()
    version = stored_correction.header(worker.provider.model).get("version")
    worker.stopping.set()
    with caplog.at_level(logging.INFO, logger="jobflow"):
        assert worker.recompute_if_due() == 0
    assert "language correction" not in caplog.text and "recomput" not in caplog.text
    assert stored_correction.header(worker.provider.model).get("version") == version
    worker.stopping.clear()                                     # the same worker, not stopping: it fits
    with caplog.at_level(logging.INFO, logger="jobflow"):
        worker.recompute_if_due()
    assert "language correction" in caplog.text


def test_rollback_reaches_a_worker_whose_provider_call_hangs(hanging, caplog):
    server, settings = hanging
    caplog.set_level(logging.INFO, logger="jobflow")
    add_jobs(jobs(3))
    worker = Worker(settings)
    worker.start()
    try:
        wait_until("a provider call in flight", lambda: server.in_flight and queue.counts()["processing"] == 3, 30)
        rollback.set_level(1, by="test")
        took = seconds_until("the rollback obeyed: items back, the worker stopped",
                             lambda: item_states() == [("pending", 0)] * 3 and status(worker)["reason"] == "disabled by rollback",
                             ROLLBACK_PROMISE + 5, every=0.1, seen=item_states)
        print(f"\nrollback obeyed {took:.1f} s after it was set, a provider call hanging")
        assert status(worker)["state"] == "stopped" and status(worker)["currentBatch"] == {}
        assert "failed an attempt" not in caplog.text
        server.clear_faults()                                   # the provider answers again (the hung call stays)
        rollback.set_level(0, by="test")
        wait_until("every job embedded once the rollback is lifted", lambda: queue.counts()["completed"] == 3, 30,
                   seen=item_states)
        assert status(worker)["state"] == "running"
    finally:
        worker.stop(timeout=2)


def test_rollback_stops_a_recompute_between_blocks(make_app, server):
    settings = dict(make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url,
                             EMBEDDING_BATCH_SIZE=5, SIMILARITY_LANGUAGE_BALANCE=False).config)
    add_jobs(jobs(30))
    worker = Worker(settings)
    worker.start(scheduler=False)
    assert worker.process_queue() == 30
    recompute.request()
    written: list[int] = []
    write = worker.lists.write

    def write_then_rollback(ids):
        written.append(len(ids))
        count = write(ids)
        if len(written) == 2:           # the rollback comes while the second of six blocks is written
            rollback.set_level(1, by="test")
            worker.watch_rollback()     # the watch's next tick (the schedule runs it every second)
        return count
    worker.lists.write = write_then_rollback
    try:
        assert worker.recompute_if_due() == 0
        assert written == [5, 5]                                # no block written after the rollback
        assert status(worker)["reason"] == "disabled by rollback"
        assert not Lease._get_collection().find_one({"_id": recompute.LEASE, "owner": worker.worker_id})
        assert worker.process_queue() == 0                      # and it claims nothing
    finally:
        rollback.set_level(0)
