"""Documents: seed-compatible fields, foreign documents survive, vectors round-trip exactly."""
import numpy as np
from bson import ObjectId

from jobflow.models import Job
from jobflow.models.fields import vector_from_bson
from jobflow.timeutil import utcnow


def test_foreign_job_document_loads_and_survives_save(app):
    coll = Job._get_collection()
    foreign = {"title": "Welder", "status": "active", "salary": {"min": 500, "max": 800, "currency": "EUR"},
               "applicants": [ObjectId(), ObjectId()], "legacyFlag": True, "tags": ["metal", "night shift"]}
    job_id = coll.insert_one(dict(foreign)).inserted_id  # no description, no dates, no embedding
    job = Job.objects.get(id=job_id)
    assert job.title == "Welder" and job.description is None
    job.title = "Senior Welder"
    job.save()
    stored = coll.find_one({"_id": job_id})
    for key in ("salary", "applicants", "legacyFlag", "tags"):
        assert stored[key] == foreign[key]
    assert stored["title"] == "Senior Welder"


def test_vector_round_trip_is_exact_and_binary(app):
    from jobflow.models.job import Embedding
    vector = np.random.default_rng(7).standard_normal(1536).astype(np.float32)
    job = Job(title="t", description="d", embedding=Embedding(status="completed", vector=vector, dimensions=1536))
    job.save()
    raw = Job._get_collection().find_one({"_id": job.id})["embedding"]["vector"]
    assert raw.subtype == 9  # BSON binary vector
    assert len(bytes(raw)) == 2 + 4 * 1536
    assert np.array_equal(vector_from_bson(raw), vector)
    loaded = Job.objects.get(id=job.id)
    assert loaded.embedding.vector.dtype == np.float32
    assert np.array_equal(loaded.embedding.vector, vector)


def test_legacy_array_vectors_still_load(app):
    job_id = Job._get_collection().insert_one(
        {"title": "x", "embedding": {"status": "completed", "vector": [0.5, 0.25, -1.0]}, "createdAt": utcnow()}).inserted_id
    assert Job.objects.get(id=job_id).embedding.vector.tolist() == [0.5, 0.25, -1.0]


def test_collections_keep_the_seed_names(app):
    from jobflow.models import QueueItem, WorkerStatus
    assert Job._get_collection().name == "jobs"
    assert QueueItem._get_collection().name == "jobqueues"
    assert WorkerStatus._get_collection().name == "workerstatuses"


def test_indexes_no_query_uses_are_dropped_where_an_earlier_version_made_them(app):
    """Every index costs every write of its collection; the ones earlier versions made and nothing reads go."""
    from jobflow.models import OBSOLETE_INDEXES, QueueItem, ensure_indexes
    jobs, items = Job._get_collection(), QueueItem._get_collection()
    jobs.create_index([("createdAt", -1)])
    jobs.create_index([("embedding.status", 1)])
    jobs.create_index([("similarJobs.jobId", 1)])
    jobs.create_index([("similarityMetadata.refill", 1)], name="similarity_refill", sparse=True)
    items.create_index([("status", 1), ("lockedAt", 1)], name="stuck")
    items.create_index([("lockedBy", 1)], name="owner")
    items.create_index([("taskType", 1), ("status", 1), ("_id", -1)], name="task_status_newest")
    assert sorted(ensure_indexes()) == sorted(f"{c}.{n}" for c, names in OBSOLETE_INDEXES.items() for n in names)
    assert set(jobs.index_information()) == {
        "_id_", "status_1", "category_1", "updatedAt_1", "externalId_1", "embedding_status_model",
        "embedding_generated", "title_ci"}
    assert not {"stuck", "owner", "task_status_newest"} & set(items.index_information())
    assert ensure_indexes() == []                  # idempotent
