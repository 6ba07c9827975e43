"""The read model: answers from memory equal the database's, it follows every writer, and the web serves from it."""
import json
import random
from datetime import timedelta

import pytest
from bson import ObjectId

from jobflow import readmodel
from jobflow.jobs import rollback
from jobflow.jobs.store import get_job, job_json
from jobflow.models import Job
from jobflow.readmodel.follow import FIELDS
from jobflow.readmodel.memory import Memory
from jobflow.similarity.answer import similar_jobs
from jobflow.timeutil import utcnow
from tests.support.waiting import wait_until

CATEGORIES = ["Nursing", "Software", "Logistics"]
PLACES = ["Tirana", "Durres", "Berlin"]


def board(count: int = 60, seed: int = 3) -> list:
    """Jobs of every kind the answers tell apart: with lists (naming active, closed and missing jobs), without a list,
    with a list but no computedAt, closed, in two languages, created in the same millisecond; their ids."""
    rng = random.Random(seed)
    now = utcnow()
    ids = [ObjectId() for _ in range(count)]
    missing = ObjectId()
    docs = []
    for n, job_id in enumerate(ids):
        listed = rng.sample([i for i in ids if i != job_id], 8) + ([missing] if n % 5 == 0 else [])
        doc = {"_id": job_id, "title": f"Job {n}", "description": f"Posting {n}, " * 20, "company": f"Co {n % 4}",
               "status": "closed" if n % 9 == 4 else "active", "category": CATEGORIES[n % 3],
               "location": PLACES[(n // 3) % 3], "language": "de" if n % 2 else "en",
               "createdAt": now - timedelta(minutes=n // 4), "updatedAt": now,
               "embedding": {"status": "completed", "model": "m", "dimensions": 4, "tokens": 9, "generatedAt": now}}
        odd = {10: {"embedding": {"status": "pending"}}, 12: {"title": 42}, 14: {"embedding": None},
               16: {"createdAt": "not a date"}, 18: {"salaryRange": None, "language": None}}
        doc.update(odd.get(n, {}))
        if n % 7 != 3:
            doc["similarJobs"] = [{"jobId": i, "score": rng.random()} for i in listed]
            if n % 11 != 6:
                doc["similarityMetadata"] = {"computedAt": now, "model": "m"}
        docs.append(doc)
    Job._get_collection().insert_many(docs)
    return ids


def loaded_memory() -> Memory:
    memory = Memory()
    for doc in Job._get_collection().find({"status": "active"}, FIELDS):
        memory.put(doc)
    return memory


@pytest.mark.parametrize("level", [0, 1])
def test_every_answer_from_memory_equals_the_databases(app, level):
    ids = board()
    rollback.set_level(level)
    memory = loaded_memory()
    compared = 0
    for job_id in ids:
        for limit in (1, 3, 10):
            for language in (None, "en", "de"):
                held = memory.similar(job_id, limit, language, lists_off=level > 0)
                try:
                    expected = similar_jobs(str(job_id), limit, active_only=True, language=language)
                except Exception:
                    assert held is None     # closed: not held, so the database answers (404)
                    continue
                body, cached = held
                assert json.loads(body) == json.loads(json.dumps(expected)), (job_id, limit, language)
                assert cached is expected["cached"]
                compared += 1
    assert compared > 300
    for job_id in ids:
        entry = memory.get(job_id)
        if entry is not None:
            assert entry.job() == json.loads(json.dumps(job_json(get_job(job_id, active_only=True)))), job_id
    closed = Job._get_collection().find_one({"status": "closed"})["_id"]
    assert memory.get(closed) is None


def test_the_followed_memory_takes_every_write_of_any_writer(app):
    ids = board(30)
    model = readmodel.ReadModel()
    model.follower.start()
    try:
        wait_until("the read model loaded", model.ready, 30)
        active = [i for i in ids if Job._get_collection().find_one({"_id": i, "status": "active"})]
        assert len(model.memory) == len(active)
        coll = Job._get_collection()
        closed, deleted, relisted = active[0], active[1], active[2]
        coll.update_one({"_id": closed}, {"$set": {"status": "closed"}})
        coll.delete_one({"_id": deleted})
        new_list = [{"jobId": active[5], "score": 0.91}, {"jobId": closed, "score": 0.9}]
        coll.update_one({"_id": relisted}, {"$set": {"similarJobs": new_list,
                                                     "similarityMetadata": {"computedAt": utcnow()}}})
        fresh = coll.insert_one({"title": "Night Nurse", "status": "active", "category": "Nursing",
                                 "createdAt": utcnow(), "updatedAt": utcnow()}).inserted_id

        def relisted_answer():
            held = model.similar(relisted, 10, None)
            return held and json.loads(held[0])

        wait_until("the close, the deletion, the new list and the insert", lambda: model.job(closed) is None
                   and model.job(deleted) is None and model.job(fresh) and relisted_answer()
                   and [e["job"]["id"] for e in relisted_answer()["similarJobs"]] == [str(active[5])], 15)
        coll.update_one({"_id": closed}, {"$set": {"status": "active"}})
        wait_until("the reopened job", lambda: model.job(closed) is not None, 15)
        assert model.stale_for() is None
        # A worker's writes (applied from their events, no read): an embedding field by field, a whole one, a list
        # and its time, a removed list; then every answer equals the database's.
        now = utcnow()
        patched = model.follower.patched
        coll.update_one({"_id": active[6]}, {"$set": {"embedding.status": "completed", "embedding.model": "m2",
                                                      "embedding.vector": [0.1, 0.2], "embedding.tokens": 77,
                                                      "embedding.generatedAt": now, "embedding.language": "sq"},
                                             "$unset": {"embedding.error": ""}})
        coll.update_one({"_id": active[7]}, {"$set": {"embedding": {"status": "failed", "model": "m3", "error": "x"}}})
        coll.update_one({"_id": active[8]}, {"$set": {"similarJobs": [{"jobId": active[9], "score": 0.5}],
                                                      "similarityMetadata.computedAt": now}})
        coll.update_one({"_id": active[9]}, {"$unset": {"similarJobs": "", "similarityMetadata": ""}})

        def equal_everywhere():
            for job_id in active[3:12]:
                if json.loads(json.dumps(job_json(get_job(job_id, active_only=True)))) != model.job(job_id):
                    return False
                for language in (None, "sq", "en"):
                    body, cached = model.similar(job_id, 10, language)
                    if json.loads(body) != json.loads(json.dumps(similar_jobs(str(job_id), 10, True, language))):
                        return False
            return True

        wait_until("every answer as the database's after the workers' writes", equal_everywhere, 15)
        assert model.follower.patched - patched >= 3     # the three $set writes (an $unset may come as a replace)
    finally:
        model.stop()


def test_the_api_and_the_page_answer_from_memory(make_app):
    app = make_app(READ_MODEL=True)
    with app.app_context():
        ids = board(30)
        client = app.test_client()
        job = next(i for i in ids if Job._get_collection().find_one({"_id": i, "status": "active",
                                                                     "similarityMetadata": {"$exists": True}}))
        first = client.get(f"/api/jobs/{job}/similar")
        assert first.status_code == 200
        model = readmodel.for_app(app)
        wait_until("the read model loaded", model.ready, 30)
        model.stop()
        model.follower.thread.join(10)
        # Written behind the stopped follower's back: only answers from memory still show the old state.
        Job._get_collection().update_one({"_id": job}, {"$set": {"title": "Changed behind memory",
                                                                 "similarJobs": []}})
        body = client.get(f"/api/jobs/{job}/similar").get_json()
        assert body["cached"] is True and body["count"] == first.get_json()["count"] > 0
        assert client.get(f"/api/jobs/{job}").get_json()["title"] == "Job " + str(ids.index(job))
        page = client.get(f"/jobs/{job}").get_data(as_text=True)
        assert "Job " + str(ids.index(job)) in page and "Changed behind memory" not in page
        # The token's wider view reads the database.
        private = client.get(f"/api/jobs/{job}", headers={"Authorization": "Bearer test-token"}).get_json()
        assert private["title"] == "Changed behind memory"
        # A job deleted through the API leaves this process's answers at once.
        assert client.delete(f"/api/jobs/{job}", headers={"Authorization": "Bearer test-token"}).status_code == 204
        assert client.get(f"/api/jobs/{job}/similar").status_code == 404
        assert client.get(f"/api/jobs/{job}").status_code == 404
