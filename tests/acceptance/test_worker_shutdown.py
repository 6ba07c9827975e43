"""Acceptance: a worker process whose provider call hangs, stopped as systemd stops it and switched off by a rollback.

``flask --app app worker`` on ``MONGODB_URI`` with the specification's ``OPENAI_API_TIMEOUT=60000`` and a grace
period of 8 s, the loopback provider never answering. Seen from outside (the process, its log, the database):
SIGTERM ends the process within the grace period and a few seconds, not at the provider's timeout; the items it
held are pending again with their attempt refunded; its log ends with "stopped". ``flask --app app rollback
--level 1`` reaches the same worker within 5 s: the items go back and its status says why.
"""
from __future__ import annotations

import signal
import time

import pytest

from tests.support.database import database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output, assert_one_line_per_event
from tests.support.seeding import write_jobs
from tests.support.waiting import seconds_until, wait_until

from .conftest import FLASK, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-shutdown-5d0c71"
GRACE_S = 8
MARGIN_S = 5            # a loaded machine's seconds to give the items back and exit
ROLLBACK_S = 5          # the promise: a rollback is obeyed within this long, whatever the worker is doing
JOBS = 3


@pytest.fixture
def hung(tmp_path, module_db_uri):
    """A product whose provider hangs, its jobs imported; a worker process holding them, its call unanswered."""
    db = database(module_db_uri)
    db.jobs.delete_many({})
    db.jobqueues.delete_many({})
    with EmbeddingsServer(api_key=KEY) as provider:
        provider.fail_always("hang")
        product = Product(tmp_path / "jobflow")
        product.write_env({
            "MONGODB_URI": module_db_uri, "DEMO_DATA": "false", "EMBEDDING_PROVIDER": "openai",
            "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": provider.base_url, "OPENAI_API_TIMEOUT": 60000,
            "WORKER_GRACEFUL_SHUTDOWN_TIMEOUT": GRACE_S * 1000, "EMBEDDING_WORKER_INTERVAL": 500,
            "WORKER_HEARTBEAT_INTERVAL": 1000, "ADMIN_API_TOKEN": "acc-shutdown-token-6f0a2c",
            "SECRET_KEY": "acc-shutdown-secret-1b7e93-5c2d8a0f4e61"}).chmod(0o600)
        try:
            imported = product.run(FLASK + ["import-jobs", str(write_jobs(tmp_path / "jobs.jsonl", JOBS, "hang"))])
            assert imported.returncode == 0, imported.text[-2000:]
            worker = product.start("worker", FLASK + ["worker"])
            wait_until("the worker to hold every item, its provider call hanging",
                       lambda: provider.in_flight and db.jobqueues.count_documents({"status": "processing"}) == JOBS,
                       90, processes=[worker])
            yield product, worker, db
        finally:
            rollback = product.run(FLASK + ["rollback", "--reenable"], timeout=60)
            product.stop_all()
            assert rollback.returncode == 0, rollback.text[-2000:]


def queue_states(db) -> list[tuple[str, int]]:
    """Each queue item's status and attempts."""
    return sorted((d["status"], d["attempts"]) for d in db.jobqueues.find({}, {"status": 1, "attempts": 1}))


def test_sigterm_while_the_provider_hangs_exits_within_the_grace_period(hung):
    product, worker, db = hung
    started = time.monotonic()
    worker.send(signal.SIGTERM)
    code = worker.wait(GRACE_S + MARGIN_S)
    took = time.monotonic() - started
    print(f"\nworker exited {took:.1f} s after SIGTERM (grace period {GRACE_S} s, provider call hanging)")
    assert code == 0
    assert queue_states(db) == [("pending", 0)] * JOBS                 # given back, the attempt refunded
    assert db.workerstatuses.find_one({"pid": worker.pid})["state"] == "stopped"
    lines = [line for line in worker.output().splitlines() if line.strip()]
    assert f"stopped (grace period over; {JOBS} items given back)" in lines[-1], lines[-5:]
    assert not any("failed an attempt" in line or "language correction" in line for line in lines)
    assert_clean_output(worker, secrets=(KEY,))
    assert_one_line_per_event(worker)


def test_rollback_reaches_the_worker_while_the_provider_hangs(hung):
    product, worker, db = hung
    started = time.monotonic()
    switched = product.run(FLASK + ["rollback", "--level", "1"], timeout=60)
    assert switched.returncode == 0, switched.text[-2000:]
    took = seconds_until("the worker to obey the rollback: items back, its status stopped by the rollback",
                         lambda: queue_states(db) == [("pending", 0)] * JOBS and
                         (db.workerstatuses.find_one({"pid": worker.pid}) or {}).get("reason") == "disabled by rollback",
                         ROLLBACK_S + MARGIN_S, every=0.1, processes=[worker], seen=lambda: queue_states(db))
    print(f"\nrollback obeyed {took:.1f} s after the command returned "
          f"({time.monotonic() - started:.1f} s after it started), the provider call hanging")
    assert worker.alive() and db.workerstatuses.find_one({"pid": worker.pid})["state"] == "stopped"
    assert "rollback level 1 in force" in worker.output()
    assert "failed an attempt" not in worker.output()
    assert worker.stop(timeout=GRACE_S + MARGIN_S) == 0
    assert_clean_output(worker, secrets=(KEY,))
