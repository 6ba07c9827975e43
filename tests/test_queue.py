"""The embedding queue against a real SecantusDB server: dedupe, order, atomic claims, retries, recovery, cleanup."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from bson import ObjectId

from jobflow.jobs import queue
from jobflow.jobs.queue import QueuePolicy
from jobflow.models import Job, QueueItem
from jobflow.timeutil import utcnow
from jobflow.worker.loop import Worker

POLICY = QueuePolicy(max_attempts=3, retry_delays_ms=(100, 200, 300), cleanup_days=7)


def only_item(job_id) -> dict:
    """The one queue document of a job (asserts there is exactly one)."""
    docs = list(QueueItem._get_collection().find({"jobId": job_id}))
    assert len(docs) == 1, docs
    return docs[0]


def statuses(ids) -> dict:
    """Queue item id -> status."""
    return {d["_id"]: d["status"] for d in QueueItem._get_collection().find({"_id": {"$in": list(ids)}})}


def test_enqueue_dedupes_and_raises_priority(app):
    job = ObjectId()
    assert queue.enqueue(job, priority=queue.PRIORITY_RECOMPUTE) is True
    assert queue.enqueue(job, priority=queue.PRIORITY_LIVE) is False
    assert queue.enqueue(job, priority=queue.PRIORITY_BACKFILL) is False
    doc = only_item(job)
    assert doc["priority"] == queue.PRIORITY_LIVE and doc["attempts"] == 0 and doc["status"] == "pending"
    assert queue.enqueue_many([job, ObjectId(), ObjectId()]) == 2
    assert QueueItem._get_collection().count_documents({"jobId": job}) == 1

    # Once claimed, a new change of the job may queue it again: one pending beside one processing.
    queue.claim("w1", 10)
    assert queue.enqueue(job) is True
    assert sorted(d["status"] for d in QueueItem._get_collection().find({"jobId": job})) == ["pending", "processing"]


def test_claim_order_is_priority_then_age(app):
    jobs = []
    for priority in (5, 10, 1, 10, 5):
        jobs.append((ObjectId(), priority))
        queue.enqueue(jobs[-1][0], priority=priority)
        time.sleep(0.005)   # distinct createdAt (BSON keeps milliseconds)
    claimed = queue.claim("w1", 10)
    expected = [j for j, _ in sorted(jobs, key=lambda jp: -jp[1])]   # stable: older first within a priority
    assert [d["jobId"] for d in claimed] == expected
    assert all(d["status"] == "processing" and d["lockedBy"] == "w1" and d["attempts"] == 1 for d in claimed)
    assert queue.claim("w2", 10) == []


def test_claims_from_kept_candidates_keep_priority_and_miss_nothing(app):
    """A claim keeps several claims' worth of back-fill candidates; a live edit queued meanwhile still goes first,
    a back-fill item queued meanwhile is claimed once the kept ones are used, and nothing is claimed twice."""
    backfill = [ObjectId() for _ in range(30)]
    queue.enqueue_many(backfill, priority=queue.PRIORITY_BACKFILL)
    first = queue.claim("w1", 5)
    assert [d["jobId"] for d in first] == backfill[:5]

    live, late = ObjectId(), ObjectId()
    queue.enqueue(live, priority=queue.PRIORITY_LIVE)
    queue.enqueue_many([late], priority=queue.PRIORITY_BACKFILL)
    second = queue.claim("w1", 5)
    assert [d["jobId"] for d in second] == [live] + backfill[5:9]

    # Another worker takes some of the candidates w1 has kept: w1 skips them, none is claimed twice.
    other = queue.claim("w2", 6)
    assert [d["jobId"] for d in other] == backfill[9:15]
    rest = []
    while batch := queue.claim("w1", 5):
        rest += batch
    everyone = [d["jobId"] for d in first + second + other + rest]
    assert sorted(everyone) == sorted(backfill + [live, late]) and len(everyone) == len(set(everyone)) == 32
    assert [d["jobId"] for d in rest][-1] == late


def test_claims_are_atomic_across_threads(app):
    total = 120
    queue.enqueue_many([ObjectId() for _ in range(total)])
    got: dict[str, list] = {}
    start = threading.Barrier(6)

    def take(owner):
        mine = got.setdefault(owner, [])
        start.wait()
        while batch := queue.claim(owner, 6):
            mine += [d["_id"] for d in batch]

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [i for ids in got.values() for i in ids]
    assert len(every) == total and len(set(every)) == total
    docs = {d["_id"]: d for d in QueueItem._get_collection().find({})}
    for owner, ids in got.items():
        assert all(docs[i]["lockedBy"] == owner and docs[i]["attempts"] == 1 for i in ids)
    assert sum(1 for ids in got.values() if ids) > 1   # the threads really competed


def test_complete_only_by_owner_sets_ttl(app):
    queue.enqueue_many([ObjectId(), ObjectId()])
    ids = [d["_id"] for d in queue.claim("w1", 2)]
    assert queue.complete(ids, "w2", POLICY) == 0
    assert set(statuses(ids).values()) == {"processing"}
    assert queue.complete(ids, "w1", POLICY) == 2
    for doc in QueueItem._get_collection().find({"_id": {"$in": ids}}):
        assert doc["status"] == "completed" and "lockedBy" not in doc
        assert doc["expiresAt"] - doc["finishedAt"] == timedelta(days=POLICY.cleanup_days)
    assert queue.complete(ids, "w1", POLICY) == 0   # settled once


def test_ttl_index_expires_finished_items(app):
    indexes = {i["name"]: i for i in QueueItem._get_collection().list_indexes()}
    assert indexes["expire"]["key"] == {"expiresAt": 1} and indexes["expire"]["expireAfterSeconds"] == 0
    assert indexes["one_pending_per_job"]["unique"] is True


def test_retry_delays_then_failed_for_good(app):
    job = ObjectId()
    queue.enqueue(job)
    for attempt in (1, 2, 3):
        deadline = time.monotonic() + 5
        while not (claimed := queue.claim("w1", 1)):
            assert time.monotonic() < deadline, "the retry never became due"
            time.sleep(0.02)
        assert claimed[0]["attempts"] == attempt
        state = queue.fail(claimed[0], "w1", f"boom {attempt}", POLICY)
        doc = only_item(job)
        if attempt < 3:
            assert state == "pending" == doc["status"]
            # The wait after attempt n is QUEUE_RETRY_DELAYS[n-1], counted from the failure.
            assert doc["nextAttemptAt"] - doc["updatedAt"] == timedelta(milliseconds=POLICY.retry_delays_ms[attempt - 1])
            assert queue.claim("w1", 1) == []   # not due yet
    assert state == "failed" == doc["status"]
    assert doc["attempts"] == 3 and doc["lastError"] == "boom 3" and doc["finishedAt"]
    assert [e["attempt"] for e in doc["errorHistory"]] == [1, 2, 3]
    assert [e["error"] for e in doc["errorHistory"]] == ["boom 1", "boom 2", "boom 3"]


def test_retry_delay_policy_and_final_errors(app):
    assert POLICY.retry_delay(1) == timedelta(milliseconds=100)
    assert POLICY.retry_delay(3) == timedelta(milliseconds=300)
    assert POLICY.retry_delay(9) == timedelta(milliseconds=300)   # past the list: the last delay
    job = ObjectId()
    queue.enqueue(job)
    claimed = queue.claim("w1", 1)[0]
    assert queue.fail(claimed, "w2", "not mine", POLICY) == "lost"
    assert queue.fail(claimed, "w1", "bad input", POLICY, retryable=False) == "failed"
    assert only_item(job)["attempts"] == 1


def test_recover_stuck_leaves_a_live_worker_its_items_until_it_looks_hung(app):
    queue.enqueue_many([ObjectId(), ObjectId()])
    slow = queue.claim("alive", 1)[0]["_id"]
    dead = queue.claim("dead", 1)[0]["_id"]
    held_for = lambda minutes: QueueItem._get_collection().update_many(   # noqa: E731
        {}, {"$set": {"lockedAt": utcnow() - timedelta(minutes=minutes)}})
    held_for(15)   # past a 10-minute timeout, short of three times it
    assert queue.recover_stuck(timedelta(minutes=10), live_owners=["alive"]) == 1
    assert statuses([slow, dead]) == {slow: "processing", dead: "pending"}
    held_for(31)   # past three times: a worker that still beats but holds an item that long is hung
    assert queue.recover_stuck(timedelta(minutes=10), live_owners=["alive"]) == 1
    assert statuses([slow]) == {slow: "pending"}


def test_recover_stuck_returns_only_items_held_too_long(app):
    queue.enqueue_many([ObjectId(), ObjectId()])
    old = queue.claim("dead", 1)[0]["_id"]
    time.sleep(0.3)
    fresh = queue.claim("alive", 1)[0]["_id"]
    assert queue.recover_stuck(timedelta(milliseconds=200)) == 1
    assert statuses([old, fresh]) == {old: "pending", fresh: "processing"}
    doc = QueueItem._get_collection().find_one({"_id": old})
    assert "lockedBy" not in doc and doc["attempts"] == 1   # the attempt that crashed stays counted
    again = queue.claim("alive", 5)
    assert [d["_id"] for d in again] == [old] and again[0]["attempts"] == 2


def test_release_worker_gives_back_everything_it_holds(app):
    queue.enqueue_many([ObjectId() for _ in range(4)])
    held = [d["_id"] for d in queue.claim("w1", 3)]
    other = [d["_id"] for d in queue.claim("w2", 1)]
    assert queue.release_worker("w1") == 3
    assert set(statuses(held).values()) == {"pending"}
    assert statuses(other) == {other[0]: "processing"}
    assert queue.release_worker("w1") == 0


def test_rate_limit_release_refunds_the_attempt(app):
    job = ObjectId()
    queue.enqueue(job)
    claimed = queue.claim("w1", 1)
    assert queue.release([claimed[0]["_id"]], "w1", delay=timedelta(seconds=30)) == 1
    doc = only_item(job)
    assert doc["status"] == "pending" and doc["attempts"] == 0
    assert doc["nextAttemptAt"] - doc["updatedAt"] == timedelta(seconds=30)


def test_clear_old_deletes_only_finished_items(app):
    jobs = [ObjectId() for _ in range(4)]
    queue.enqueue_many(jobs)
    a, b, c = queue.claim("w1", 3)
    queue.complete([a["_id"]], "w1", POLICY)
    queue.fail(b, "w1", "bad", POLICY, retryable=False)
    assert queue.clear_old(1) == 0   # nothing is a day old
    time.sleep(0.01)
    assert queue.clear_old(0) == 2
    left = sorted(d["status"] for d in QueueItem._get_collection().find({}))
    assert left == ["pending", "processing"]


@pytest.mark.parametrize("change", ["deleted", "closed"])
def test_worker_skips_items_of_deleted_or_closed_jobs(app, change):
    now = utcnow()
    job_id = Job._get_collection().insert_one({"title": "Nurse", "description": "Night shifts.", "status": "active",
                                               "createdAt": now, "updatedAt": now}).inserted_id
    queue.enqueue(job_id)
    if change == "deleted":
        Job._get_collection().delete_one({"_id": job_id})
    else:
        Job._get_collection().update_one({"_id": job_id}, {"$set": {"status": "closed"}})
    worker = Worker(dict(app.config), worker_id="skipper")   # the local provider: never called here
    worker.start(scheduler=False)
    assert worker.process_queue() == 1
    doc = only_item(job_id)
    assert doc["status"] == "skipped" and doc["attempts"] == 1
    assert doc["lastError"] == ("job deleted" if change == "deleted" else "job is closed")
    assert doc["expiresAt"] and worker.failed == 0
