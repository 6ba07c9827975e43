"""/metrics in Prometheus text format, behind the token unless METRICS_PUBLIC."""
from prometheus_client.parser import text_string_to_metric_families

from jobflow.jobs import queue
from jobflow.models import Job, WorkerStatus
from jobflow.timeutil import utcnow


def samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_need_the_token_and_report_the_pipeline(app, client, auth_headers):
    assert client.get("/metrics").status_code == 401
    ids = [Job(title=f"J{i}", description="d", status="active").save().id for i in range(4)]
    Job.objects(id=ids[0]).update(set__embedding__status="completed", set__embedding__model="multilingual-e5-small")
    queue.enqueue_many(ids[1:])
    WorkerStatus(workerId="w1", host="h", pid=1, state="running", processed=7, lastHeartbeat=utcnow()).save()
    response = client.get("/metrics", headers=auth_headers)
    assert response.status_code == 200 and response.mimetype == "text/plain"
    values = samples(response.get_data(as_text=True))
    assert values[("jobflow_jobs", ())] == 4
    assert values[("jobflow_embedding_coverage_ratio", ())] == 0.25
    assert values[("jobflow_queue_items", (("status", "pending"),))] == 3
    assert values[("jobflow_workers", (("state", "running"),))] == 1
    assert values[("jobflow_worker_processed_total", (("worker", "w1"),))] == 7


def test_metrics_can_be_public(make_app):
    assert make_app(METRICS_PUBLIC=True).test_client().get("/metrics").status_code == 200
