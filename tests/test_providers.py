"""The ``openai`` provider driven through the worker by the loopback OpenAI server, fault by fault."""
from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from bson.binary import Binary

from jobflow.embeddings import get_provider
from jobflow.embeddings.openai_provider import OpenAIProvider
from jobflow.embeddings.text import TEXTS_PER_JOB, embedded_texts
from jobflow.jobs import queue
from jobflow.models import Job, QueueItem, WorkerStatus
from jobflow.models.fields import vector_from_bson
from jobflow.timeutil import utcnow
from jobflow.worker import batch as embedding_batches
from jobflow.worker.loop import Worker
from tests.support.seeding import add_jobs

KEY = "sk-test-loopback"
TEXTS = [("Registered Nurse", "Care for patients on the night shift in the surgery ward."),
         ("Nurse", "Patient care in the surgery ward, night shifts."),
         ("Python Developer", "Build REST APIs in Python with Django and PostgreSQL.")]


@pytest.fixture
def make_worker(make_app, server):
    """Workers on the openai provider against the loopback server, with small settings."""
    base = {"EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_TIMEOUT": 1000, "QUEUE_RETRY_DELAYS": [0, 0, 0], "QUEUE_MAX_ATTEMPTS": 3,
            "SIMILARITY_MIN_SCORE": 0.3}
    make_app(**base)   # connects this test's database before any job is added

    def make(**overrides):
        worker = Worker(dict(make_app(**{**base, **overrides}).config))
        worker.start(scheduler=False)
        return worker
    return make


def job(job_id) -> dict:
    return Job._get_collection().find_one({"_id": job_id})


def postings(texts) -> list[dict]:
    """Job documents from (title, description) pairs."""
    return [{"title": t, "description": d} for t, d in texts]


def latest_item(job_id) -> dict:
    return QueueItem._get_collection().find_one({"jobId": job_id}, sort=[("createdAt", -1)])


def sent_texts(job_id) -> list[str]:
    """The texts the worker sends for a job."""
    return embedded_texts(job(job_id))


def test_get_provider_builds_openai_from_settings(make_worker, server):
    worker = make_worker()
    assert isinstance(worker.provider, OpenAIProvider)
    assert worker.provider.dimensions == 1536 and worker.provider.describe() == "openai:text-embedding-3-small"
    assert type(get_provider(worker.settings)) is OpenAIProvider


def test_success_stores_vectors_lists_and_completes(make_worker, server):
    ids = add_jobs(postings(TEXTS))
    worker = make_worker()
    assert worker.process_queue() == 3
    assert {t for i in ids for t in sent_texts(i)} == set(server.embedded) and set(server.embedded.values()) == {1}
    for job_id in ids:
        emb = job(job_id)["embedding"]
        assert emb["status"] == "completed" and emb["model"] == "text-embedding-3-small"
        assert isinstance(emb["vector"], Binary) and emb["vector"].subtype == 9
        vector = vector_from_bson(emb["vector"])
        assert vector.shape == (1536,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-3
        assert emb["dimensions"] == 1536 and emb["tokens"] > 0 and emb["retries"] == 0 and len(emb["textHash"]) == 64
        assert latest_item(job_id)["status"] == "completed"
    nurse = job(ids[1])
    assert nurse["similarJobs"][0]["jobId"] == ids[0]
    assert worker.processed == 3 and worker.failed == 0 and worker.tokens > 0


@pytest.mark.parametrize("asked", ["86400", "1e400", "-5"])
def test_an_absurd_retry_after_is_not_obeyed(make_worker, server, asked):
    """A day, an infinite or a negative wait: the worker uses its own back-off (5 s), like the openai SDK."""
    ids = add_jobs(postings(TEXTS))
    worker = make_worker()
    server.fail_next(1, "rate_limit", retry_after=asked)
    worker.process_queue()
    after = utcnow()
    assert worker.blocked_until - time.monotonic() <= 5.0
    for job_id in ids:
        doc = latest_item(job_id)
        assert doc["status"] == "pending" and doc["attempts"] == 0
        assert doc["nextAttemptAt"] <= after + timedelta(seconds=5.01)


def test_rate_limit_waits_as_asked_and_spends_no_attempt(make_worker, server):
    ids = add_jobs(postings(TEXTS))
    worker = make_worker()
    server.fail_next(1, "rate_limit", retry_after=2)
    before = utcnow()
    worker.process_queue()
    after = utcnow()
    for job_id in ids:
        doc = latest_item(job_id)
        assert doc["status"] == "pending" and doc["attempts"] == 0 and not doc.get("errorHistory")
        # due again 2 s after the answer, which came between ``before`` and ``after`` (BSON keeps ms)
        assert before + timedelta(seconds=1.99) <= doc["nextAttemptAt"] <= after + timedelta(seconds=2.01)
    requests = server.requests
    assert worker.process_queue() == 0 and server.requests == requests   # waits; does not even claim
    assert queue.claim("other", 10) == []                               # nor can anyone else yet
    time.sleep(2.1)
    assert worker.process_queue() == 3
    assert all(latest_item(i)["status"] == "completed" and latest_item(i)["attempts"] == 1 for i in ids)


@pytest.mark.parametrize("mode, options, error", [
    ("server_error", {}, "the provider answered 500"),
    ("timeout", {"seconds": 2}, "did not answer in time"),
    ("malformed", {}, "not valid embeddings JSON"),
])
def test_retryable_errors_retry_then_fail(make_worker, server, mode, options, error):
    [job_id] = add_jobs(postings(TEXTS[:1]))
    worker = make_worker(OPENAI_API_TIMEOUT=300)
    server.fail_always(mode, **options)
    assert worker.process_queue() == 3   # three attempts, retry delays of 0
    doc = latest_item(job_id)
    assert doc["status"] == "failed" and doc["attempts"] == 3 and error in doc["lastError"]
    assert [e["attempt"] for e in doc["errorHistory"]] == [1, 2, 3]
    emb = job(job_id)["embedding"]
    assert emb["status"] == "failed" and error in emb["error"] and "vector" not in emb
    assert emb["retries"] == 3   # the runbook's query for jobs that used up their attempts finds it
    assert [j["_id"] for j in Job._get_collection().find({"embedding.retries": {"$gte": 3}})] == [job_id]
    assert worker.failed == 3 and worker.processed == 0


def test_retry_waits_the_configured_delay_then_succeeds(make_worker, server):
    [job_id] = add_jobs(postings(TEXTS[:1]))
    worker = make_worker(QUEUE_RETRY_DELAYS=[60000, 300000, 900000])
    server.fail_next(1, "server_error")
    assert worker.process_queue() == 1
    doc = latest_item(job_id)
    assert doc["status"] == "pending" and doc["attempts"] == 1
    assert doc["nextAttemptAt"] - doc["updatedAt"] == timedelta(milliseconds=60000)
    assert worker.process_queue() == 0   # not due for a minute
    QueueItem._get_collection().update_one({"_id": doc["_id"]}, {"$set": {"nextAttemptAt": utcnow()}})
    assert worker.process_queue() == 1
    assert latest_item(job_id)["status"] == "completed" and job(job_id)["embedding"]["retries"] == 1


@pytest.mark.parametrize("mode, error", [
    ("wrong_dimensions", "invalid vector: vector has 1535 dimensions, expected 1536"),
    ("nan", "invalid vector: vector contains NaN or infinite values"),
    ("zero_vector", "invalid vector: vector is all zeros"),
])
def test_invalid_vectors_are_never_stored(make_worker, server, mode, error):
    ids = add_jobs(postings(TEXTS[:2]))
    worker = make_worker(QUEUE_MAX_ATTEMPTS=1)
    server.fail_next(1, mode)
    worker.process_queue()
    bad = [i for i in ids if latest_item(i)["status"] == "failed"]
    good = [i for i in ids if i not in bad]
    # The whole response is wrong for wrong_dimensions; only the first vector for nan and zero_vector.
    assert len(bad) == (2 if mode == "wrong_dimensions" else 1)
    for job_id in bad:
        assert latest_item(job_id)["lastError"] == error
        emb = job(job_id)["embedding"]
        assert emb["status"] == "failed" and emb["error"] == error and "vector" not in emb
    for job_id in good:
        assert job(job_id)["embedding"]["status"] == "completed" and latest_item(job_id)["status"] == "completed"


@pytest.mark.parametrize("mode, reason", [
    ("bad_key", "the provider refused the API key (check OPENAI_API_KEY)"),
    ("unknown_model", "the provider does not know the model 'text-embedding-3-small' (check OPENAI_EMBEDDING_MODEL)"),
])
def test_configuration_errors_degrade_without_burning_the_queue(make_worker, server, monkeypatch, mode, reason):
    monkeypatch.setattr(embedding_batches, "CONFIG_ERROR_RETRY", timedelta(seconds=0.5))
    ids = add_jobs(postings(TEXTS))
    worker = make_worker()
    server.fail_always(mode)
    worker.process_queue()
    assert all(latest_item(i)["status"] == "pending" and latest_item(i)["attempts"] == 0 for i in ids)
    assert worker.state == "degraded" and worker.reason == reason and worker.failed == 0
    status = WorkerStatus._get_collection().find_one({"workerId": worker.worker_id})
    assert status["state"] == "degraded" and status["reason"] == reason
    requests = server.requests
    assert worker.process_queue() == 0 and server.requests == requests   # stopped claiming
    server.clear_faults()                                                # the operator fixes it
    time.sleep(0.6)
    assert worker.process_queue() == 3
    assert worker.state == "running" and all(latest_item(i)["status"] == "completed" for i in ids)
    worker.heartbeat()
    assert WorkerStatus._get_collection().find_one({"workerId": worker.worker_id})["state"] == "running"


def test_a_real_wrong_key_degrades_too(make_worker, server):
    [job_id] = add_jobs(postings(TEXTS[:1]))
    worker = make_worker(OPENAI_API_KEY="sk-wrong-key-0123456789")
    worker.process_queue()
    assert worker.state == "degraded" and "OPENAI_API_KEY" in worker.reason
    assert latest_item(job_id)["status"] == "pending" and latest_item(job_id)["attempts"] == 0


def test_unchanged_job_is_never_embedded_again(make_worker, server):
    ids = add_jobs(postings(TEXTS))
    worker = make_worker()
    worker.process_queue()
    inputs = server.inputs_total
    assert inputs == sum(len(sent_texts(i)) for i in ids)
    for job_id in ids:
        assert queue.enqueue(job_id) is True
    assert worker.process_queue() == 3
    assert server.inputs_total == inputs   # no new input reached the provider
    assert QueueItem._get_collection().count_documents({"status": "completed"}) == 6
    # A changed text is embedded again, once.
    Job._get_collection().update_one({"_id": ids[2]}, {"$set": {"description": "Build data pipelines in Python."}})
    queue.enqueue(ids[2])
    worker.process_queue()
    assert server.inputs_total == inputs + len(sent_texts(ids[2]))
    assert server.embedded[sent_texts(ids[2])[-1]] == 1


@pytest.mark.parametrize("mode", ["rate_limit", "bad_key"])
def test_no_more_calls_once_told_to_wait(make_worker, server, mode):
    worker = make_worker(EMBEDDING_MAX_CONCURRENT=1)
    ids = add_jobs(postings([(f"Cook {i}", f"Kitchen shift {i}.") for i in range(worker.claim_size)]))
    assert len(worker.provider.batches([""] * len(ids), inputs_each=TEXTS_PER_JOB)) > 1   # several calls
    server.fail_next(1, mode, retry_after=5)
    worker.process_queue()
    assert server.requests == 1   # the rest of the batch is not sent
    assert QueueItem._get_collection().count_documents({"status": "pending", "attempts": 0}) == len(ids)
