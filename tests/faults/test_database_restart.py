"""The database server SIGKILLed and started again (same port, same data) under gunicorn and a worker process.

Neither is restarted: the API answers 503 JSON while the database is away and 200 once it is back, the
worker survives its failed batch, gives back what it held and drains the queue; every job ends embedded
with one completed queue item and correct similar-jobs lists.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobflow.db import SERVER_SELECTION_TIMEOUT_MS, free_port
from tests.support.database import DatabaseServer
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output
from tests.support.seeding import add_jobs
from tests.support.waiting import seconds_until
from tests.support.web import http_get
from tests.support.workers import (
    assert_end_state,
    completed_count,
    drained,
    held_count,
    provider_duplicates,
    queue_state,
    record,
    status_of_pid,
    wait_lists_correct,
    worker_env,
)

pytestmark = pytest.mark.slow

JOBS = 450
OUTAGE_LIMIT = SERVER_SELECTION_TIMEOUT_MS / 1000 + 2.5   # a request during the outage answers within this


def test_database_killed_and_restarted_under_web_and_worker(tmp_path, make_app, procs):
    db = DatabaseServer(tmp_path / "db")
    db.start()
    uri = db.uri("faults")
    app = make_app(MONGODB_URI=uri)      # this process's connection, for seeding and checking
    try:
        with app.app_context(), EmbeddingsServer(latency=0.2) as provider:
            ids = add_jobs(JOBS)
            port = free_port()
            # Lists flushed after every batch, so items complete batch by batch and the kill finds both kinds.
            env = worker_env(uri, provider, tmp_path, PORT=port, HOST="127.0.0.1", WEB_CONCURRENCY=2,
                             SIMILARITY_FLUSH_INTERVAL=0)
            web = procs.gunicorn(env)
            worker = procs.worker(env)
            base = f"http://127.0.0.1:{port}"
            seconds_until("gunicorn", lambda: http_get(base + "/api/jobs", timeout=5)[0] == 200, 60, processes=[web],
                          seen=queue_state)
            # Kill it mid-drain: some jobs done, a batch claimed and in the worker's hands, more still queued.
            seconds_until("a batch in flight", lambda: completed_count() >= 50 and held_count() > 0, 60, every=0.05,
                          processes=[worker], seen=queue_state)
            before = completed_count()
            db.kill()
            killed_at = time.monotonic()

            # While it is away: 503 with the one error shape, fast, from every kind of endpoint (asked at once).
            paths = ["/api/jobs", f"/api/jobs/{ids[0]}/similar", f"/api/jobs/{ids[1]}", "/api/health/embeddings", "/"]
            with ThreadPoolExecutor(len(paths)) as pool:
                answers = dict(zip(paths, pool.map(lambda path: http_get(base + path), paths)))
            outage = {path: (a[0], round(a[2], 2)) for path, a in answers.items()}
            for path, (status, body, seconds, headers) in answers.items():
                assert status == 503, (path, status, body)
                assert headers.get("Retry-After"), path
                assert seconds < OUTAGE_LIMIT, (path, seconds)
                if path.startswith("/api/"):
                    assert body["error"]["code"] == "database_unavailable" and body["error"]["message"], body
                else:
                    assert "Service Unavailable" in body and "Traceback" not in body
            time.sleep(max(0.0, 3.0 - (time.monotonic() - killed_at)))   # the worker's batch fails meanwhile
            down_for = time.monotonic() - killed_at
            assert worker.alive() and web.alive()

            db_start_seconds = db.start()                     # same port, same data folder
            up_at = time.monotonic()
            api_back = seconds_until("the API to answer again",
                                     lambda: http_get(base + "/api/jobs", timeout=5)[0] == 200, 30, every=0.05,
                                     processes=[web, worker], seen=queue_state)
            similar = http_get(base + f"/api/jobs/{ids[0]}/similar")
            assert similar[0] == 200, similar
            seconds_until("the worker to resume", lambda: completed_count() > before, 60, every=0.1, processes=[worker],
                          seen=queue_state)
            resumed = time.monotonic() - up_at
            seconds_until("the queue to drain", lambda: drained(ids), 90, processes=[worker], seen=queue_state)
            drained_after = time.monotonic() - up_at
            lists = wait_lists_correct(30, [worker])

            assert_end_state(ids)
            missing, extra, _ = provider_duplicates(provider, ids)
            assert missing == 0
            # At-least-once at the provider: the batch in flight when the database died could not be stored
            # and is embedded again (and a restart may undo the last ~100 ms of acknowledged writes).
            assert extra <= 2 * 2 * 384, extra   # two claim rounds of 384 jobs, two texts each
            health = http_get(base + "/api/health/embeddings")
            assert health[0] == 200 and health[1]["status"] in ("healthy", "degraded"), health

            status = status_of_pid(worker.pid)
            assert worker.alive() and status["state"] == "running", status
            assert "recovered from an error" in worker.output()
            assert worker.stop() == 0 and web.stop() == 0
            assert_clean_output(worker, web)
    finally:
        db.stop()
    record("database_sigkill_restart", jobs=JOBS, completed_before_kill=before, outage_seconds=down_for,
           outage_answers={k: v for k, v in outage.items()}, db_start_seconds=db_start_seconds,
           api_first_200_after_db_up=api_back, worker_first_completion_after_db_up=resumed,
           queue_drained_after_db_up=drained_after, lists_correct_after_drain=lists,
           lost_items=0, duplicate_provider_embeddings=extra, stuck_items=0)
