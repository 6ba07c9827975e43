"""In-process, fast: what the worker does after the database failed under it (the process-level proof is
test_database_restart.py). A failed write is not the item's fault: no attempt is failed and no retry delay
served; what the worker still holds goes back at its next poll, and lists the database lost are re-written.
"""
from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect

from jobflow.jobs import queue
from jobflow.models import Job, QueueItem
from jobflow.worker.loop import Worker
from tests.support import KEY
from tests.support.openai_server import EmbeddingsServer
from tests.support.seeding import add_jobs
from tests.support.workers import MIN_SCORE, assert_end_state, held_count, list_problems


@pytest.fixture
def worker(make_app):
    with EmbeddingsServer() as provider:
        app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=provider.base_url,
                       SIMILARITY_MIN_SCORE=MIN_SCORE, QUEUE_RETRY_DELAYS=[600000, 600000, 600000])
        with app.app_context():
            worker = Worker.from_app(app)
            worker.start(scheduler=False)
            yield worker
            worker.stop(timeout=1)


def test_a_batch_whose_writes_fail_is_given_back_at_the_next_poll(worker, monkeypatch):
    ids = add_jobs(30)
    store = worker.batch._store

    def database_gone(group, result):
        raise AutoReconnect("127.0.0.1:27017: connection closed")
    monkeypatch.setattr(worker.batch, "_store", database_gone)
    with pytest.raises(AutoReconnect):
        worker.process_queue()
    assert held_count(worker.worker_id) == 30            # held, not failed: no error, no ten-minute retry delay
    assert QueueItem._get_collection().count_documents({"errorHistory.0": {"$exists": True}}) == 0
    assert worker.failed == 0

    monkeypatch.setattr(worker.batch, "_store", store)
    assert worker.process_queue() == 30                  # given back, claimed again, stored
    assert_end_state(ids)
    assert QueueItem._get_collection().count_documents({"attempts": 2}) == 30   # the lost attempt stays counted
    assert list_problems() == []


def test_lists_the_database_lost_are_written_again(worker):
    ids = add_jobs(40)
    assert worker.process_queue() == 40
    assert list_problems() == []
    # A database restart undid the last list writes (SecantusDB, like mongod with j:false, may lose the last
    # ~100 ms of acknowledged writes on SIGKILL).
    Job._get_collection().update_many({"_id": {"$in": ids[:7]}}, {"$set": {"similarJobs": []}})
    assert len(list_problems()) == 7
    worker.note_database_error()                         # a periodic job saw the database fail
    assert worker.process_queue() == 0
    assert list_problems() == []
    assert queue.counts()["processing"] == 0
