"""flask rollback: dry runs show counts and change nothing; level 1 serves the fallback; level 3 removes data."""
import numpy as np
from bson import ObjectId

from jobflow.db import get_db
from jobflow.jobs import queue, rollback
from jobflow.models import Job, WorkerStatus
from jobflow.models.fields import vector_to_bson
from jobflow.timeutil import utcnow


def populate(n=12):
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        other = ObjectId()
        ids.append(Job._get_collection().insert_one({
            "title": f"Job {i}", "description": "d", "status": "active", "category": "Sales", "createdAt": utcnow(),
            "customField": i,
            "embedding": {"status": "completed", "model": "m", "vector": vector_to_bson(rng.standard_normal(8))},
            "similarJobs": [{"jobId": other, "score": 0.9}], "similarityMetadata": {"computedAt": utcnow()}}).inserted_id)
    queue.enqueue_many(ids[:5])
    WorkerStatus(workerId="w1", host="h", pid=1).save()
    return ids


def test_dry_runs_change_nothing(app):
    populate()
    runner = app.test_cli_runner()
    for level in ("1", "2", "3"):
        result = runner.invoke(args=["rollback", "--level", level, "--dry-run"])
        assert result.exit_code == 0, result.output
        assert "jobs with an embedding: 12; with a similar list: 12; queue items: 5; worker statuses: 1" in result.output
        assert "dry run: nothing changed" in result.output
    assert rollback.level(fresh=True) == 0
    assert Job.objects(embedding__exists=True).count() == 12


def test_level_1_serves_fallback_and_stops_claiming(app, client):
    ids = populate()
    result = app.test_cli_runner().invoke(args=["rollback", "--level", "1"])
    assert result.exit_code == 0 and "level 1 in force" in result.output
    body = client.get(f"/api/jobs/{ids[0]}/similar").get_json()
    assert body["cached"] is False and body["count"] > 0      # the fallback answers
    from jobflow.worker.loop import Worker
    worker = Worker(dict(app.config), worker_id="rollback-test")
    assert worker.process_queue() == 0                         # claims nothing
    assert WorkerStatus.objects.get(workerId="rollback-test").reason == "disabled by rollback"
    assert Job.objects(embedding__exists=True).count() == 12   # nothing deleted
    app.test_cli_runner().invoke(args=["rollback", "--reenable"])
    assert rollback.level(fresh=True) == 0


def test_level_3_needs_the_typed_name_then_removes_embedding_data(app):
    populate()
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["rollback", "--level", "3"], input="yes\n")
    assert refused.exit_code != 0 and "nothing changed" in refused.output
    assert Job.objects(embedding__exists=True).count() == 12
    name = get_db().name
    done = runner.invoke(args=["rollback", "--level", "3"], input=f"{name}\n")
    assert done.exit_code == 0, done.output
    assert "removed embedding data from 12 jobs; dropped 5 queue items and 1 worker statuses" in done.output
    coll = Job._get_collection()
    assert coll.count_documents({}) == 12
    assert coll.count_documents({"$or": [{"embedding": {"$exists": True}}, {"similarJobs": {"$exists": True}},
                                         {"similarityMetadata": {"$exists": True}}]}) == 0
    assert coll.count_documents({"customField": {"$exists": True}}) == 12  # the rest of each job is kept
    assert "jobqueues" not in get_db().list_collection_names()
    assert "workerstatuses" not in get_db().list_collection_names()
