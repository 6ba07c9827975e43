"""The provider failing in every way the loopback server can, while one worker process drains a queue.

One worker process serves the whole module (it starts once); each test queues 100 fresh jobs (two provider
calls at once), makes the first call fail in one way and checks the end state: every job embedded, each
text embedded exactly once (twice only for the partner text of a job whose other vector came back NaN or
zero, so the job was retried), nothing pending, processing or failed, every list correct. Bad key and
unknown model pause the worker for a minute by design and are covered in-process (tests/test_providers.py).
"""
from __future__ import annotations

import sys
import time
import uuid

import pytest
from pymongo import MongoClient

from jobflow.db import connect
from jobflow.jobs import queue
from jobflow.models import QueueItem, ensure_indexes
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import Process, assert_clean_output
from tests.support.seeding import add_jobs
from tests.support.waiting import seconds_until
from tests.support.workers import (
    assert_end_state,
    drained,
    provider_duplicates,
    queue_state,
    record,
    status_of_pid,
    wait_lists_correct,
    worker_env,
)

pytestmark = pytest.mark.slow

JOBS = 100            # 200 texts: two provider calls (64 and 36 jobs) at once
FAULTS = 1            # the first call of each test fails, the other goes through
CLIENT_TIMEOUT_MS = 1500

# mode, options, whether a failed call spends an attempt, extra embeddings expected at the provider
MODES = [
    ("rate_limit", {"retry_after": 1}, False, 0),
    ("server_error", {}, True, 0),
    ("timeout", {"seconds": 3}, True, 0),          # answers after the client gave up (OPENAI_API_TIMEOUT 1.5 s)
    ("malformed", {}, True, 0),
    ("wrong_dimensions", {}, True, 0),
    ("hang", {}, True, 0),
    # One vector of the answer is bad: its job is retried, so the job's other text is embedded twice.
    ("nan", {}, True, FAULTS),
    ("zero_vector", {}, True, FAULTS),
]


@pytest.fixture(scope="module")
def pipeline(mongo_server, tmp_path_factory):
    """A database, the loopback provider and one worker process for the module."""
    name = "faults_" + uuid.uuid4().hex[:10]
    uri = f"{mongo_server}/{name}"
    folder = tmp_path_factory.mktemp("provider-faults")
    connect(uri)
    ensure_indexes()
    with EmbeddingsServer() as server:
        env = worker_env(uri, server, folder, OPENAI_API_TIMEOUT=CLIENT_TIMEOUT_MS,
                         QUEUE_RETRY_DELAYS="300,300,300")
        worker = Process("worker", [sys.executable, "-m", "flask", "--app", "app", "worker"], env,
                      folder / "worker.log")
        try:
            yield {"uri": uri, "server": server, "worker": worker}
            assert worker.stop() == 0
            assert_clean_output(worker)
            assert status_of_pid(worker.pid)["state"] == "stopped"
        finally:
            if worker.alive():
                worker.process.kill()
    client = MongoClient(mongo_server)
    client.drop_database(name)
    client.close()


@pytest.fixture(autouse=True)
def _connected(pipeline):
    connect(pipeline["uri"])   # other modules' apps may have connected elsewhere
    yield


@pytest.mark.parametrize("mode, options, spends_attempt, extra_expected", MODES, ids=[m[0] for m in MODES])
def test_worker_process_survives_provider_fault(pipeline, mode, options, spends_attempt, extra_expected):
    server, worker = pipeline["server"], pipeline["worker"]
    seconds_until("the previous test's queue", lambda: drained(), 60, processes=[worker], seen=queue_state)
    server.clear_faults()
    server.reset_counters()
    server.fail_next(FAULTS, mode, **options)
    started = time.monotonic()
    ids = add_jobs(JOBS, tag=f"{mode}-")
    seconds = seconds_until(f"{JOBS} jobs through {mode} faults", lambda: drained(ids), 60, every=0.1, processes=[worker],
                            seen=queue_state)
    assert server.pending_faults == 0, "the faults were not all met"
    lists = wait_lists_correct(20, [worker])

    assert_end_state(ids)
    missing, extra, twice = provider_duplicates(server, ids)
    assert missing == 0
    assert extra == extra_expected, f"{extra} extra embeddings: {list(twice)[:3]}"
    assert max(twice.values(), default=1) <= 2
    items = QueueItem._get_collection()
    retried = items.count_documents({"jobId": {"$in": ids}, "errorHistory.0": {"$exists": True}})
    if spends_attempt:
        assert retried > 0, "a failed call must leave its error on the items it carried"
        assert items.count_documents({"jobId": {"$in": ids}, "attempts": {"$gt": 2}}) == 0
    else:
        assert retried == 0 and items.count_documents({"jobId": {"$in": ids}, "attempts": {"$ne": 1}}) == 0
    assert queue.counts()["failed"] == 0
    record(f"provider_{mode}", jobs=JOBS, faults=FAULTS, drained_seconds=seconds,
           total_seconds=time.monotonic() - started, lists_correct_after=lists, items_retried=retried,
           lost_items=0, extra_provider_embeddings=extra, provider_calls=server.requests)
