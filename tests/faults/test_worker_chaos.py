"""Worker processes hurt while they share one queue; the memory guard pausing and resuming.

``tests/test_worker_processes.py`` already proves each on its own (three workers exactly once, SIGKILL
loses nothing, SIGTERM finishes in flight). Here they happen together, and the checks go further: the
similar-jobs lists the racing processes wrote end correct, and the recovery is timed.
"""
from __future__ import annotations

import signal
import time

import pytest

from jobflow.jobs import queue
from jobflow.models import QueueItem
from jobflow.timeutil import utcnow
from jobflow.worker.loop import Worker
from tests.support import KEY
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output
from tests.support.seeding import add_jobs
from tests.support.waiting import seconds_until
from tests.support.workers import (
    MIN_SCORE,
    TOP_N,
    assert_end_state,
    completed_count,
    drained,
    held_count,
    provider_duplicates,
    queue_state,
    record,
    status_of_pid,
    texts_of,
    wait_lists_correct,
    worker_env,
)

pytestmark = pytest.mark.slow

STUCK_TIMEOUT_MS = 8000   # the killed worker is dead after 5 s (WORKER_DEAD_THRESHOLD); its items return after 8 s


def test_three_workers_race_while_one_is_killed_and_one_is_terminated(app, db_uri, tmp_path, procs):
    ids = add_jobs(1200)
    with EmbeddingsServer(latency=0.6) as provider:
        # One call at a time: each worker claims 128 jobs per batch (4 calls, 2.4 s: with lists flushed every 2 s,
        # a flush after every batch), so all three get work and each claims several times.
        env = worker_env(db_uri, provider, tmp_path, QUEUE_STUCK_TIMEOUT=STUCK_TIMEOUT_MS, EMBEDDING_MAX_CONCURRENT=1,
                         SIMILARITY_FLUSH_INTERVAL=2000)
        doomed, leaving, survivor = (procs.worker(env) for _ in range(3))
        everyone = [doomed, leaving, survivor]
        seconds_until("three workers", lambda: all(status_of_pid(w.pid).get("workerId") for w in everyone), 60,
                      processes=everyone, seen=queue_state)
        doomed_id, leaving_id = (status_of_pid(w.pid)["workerId"] for w in (doomed, leaving))
        # Killed just after a fresh claim (a held set sharing nothing with the one before): its last flush
        # has completed, and the next is a batch away. A kill timed only by "holds something" could land while
        # the flush's completion was already on its way to the database, and leave nothing held.
        seen: dict = {"last": None}

        def just_claimed() -> bool:
            current = frozenset(d["_id"] for d in QueueItem._get_collection().find(
                {"status": "processing", "lockedBy": doomed_id}, {"_id": 1}))
            fresh = bool(current) and seen["last"] is not None and not current & seen["last"]
            seen["last"] = current
            return fresh and completed_count() >= 30 and held_count(leaving_id) > 0
        seconds_until("both victims holding a batch, the doomed one fresh from a claim", just_claimed, 60,
                      every=0.05, processes=everyone, seen=queue_state)
        doomed.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        killed_wall = utcnow()
        leaving.send(signal.SIGTERM)
        assert doomed.wait(10) == -signal.SIGKILL
        # What the dead worker held, read before its items can come back (QUEUE_STUCK_TIMEOUT): the leaving
        # worker's stop may take longer than that on a loaded machine. The dead worker's last request (a
        # completion of 50 items) may still be running in the database: the set is read until it holds still.
        reads: list = []

        def held_settled() -> bool:
            reads.append({d["_id"]: d["jobId"] for d in QueueItem._get_collection().find(
                {"status": "processing", "lockedBy": doomed_id}, {"jobId": 1})})
            return len(reads) >= 2 and reads[-1] == reads[-2]
        seconds_until("the killed worker's items to hold still", held_settled, 5, every=0.75,
                      processes=[leaving, survivor], seen=lambda: [len(r) for r in reads])
        held = [{"_id": i, "jobId": j} for i, j in reads[-1].items()]
        assert held, "the killed worker held nothing: the test did not kill it mid-batch"
        assert leaving.wait(40) == 0
        sigterm_exit = time.monotonic() - killed_at
        assert held_count(leaving_id) == 0, "SIGTERM must finish or give back every item"

        recovered = seconds_until("the survivor to drain the queue", lambda: drained(ids), 90, processes=[survivor],
                                  seen=queue_state)
        recovered += 0.5
        lists = wait_lists_correct(30, [survivor])
        assert_end_state(ids)
        missing, extra, twice = provider_duplicates(provider, ids)
        assert missing == 0
        # Only what the killed worker held may have reached the provider twice; everything else exactly once.
        assert set(twice) <= set(texts_of([h["jobId"] for h in held])), "a text not held by the dead worker twice"
        # Each item the dead worker held was claimed again (a second attempt), unless its last request, still
        # running when the set was read, completed it (finished before the kill, first attempt).
        items = list(QueueItem._get_collection().find({"_id": {"$in": [h["_id"] for h in held]}},
                                                      {"attempts": 1, "status": 1, "finishedAt": 1}))
        reclaimed = [d for d in items if d["attempts"] == 2 and d["status"] == "completed"]
        late = [d for d in items if d["attempts"] == 1 and d["status"] == "completed"
                and d["finishedAt"].replace(tzinfo=None) <= killed_wall.replace(tzinfo=None)]
        assert len(reclaimed) + len(late) == len(held) and reclaimed, (len(held), items)
        statuses = {n: status_of_pid(w.pid) for n, w in zip(("doomed", "leaving", "survivor"), everyone)}
        assert statuses["leaving"]["state"] == "stopped" and statuses["leaving"]["currentBatch"] == {}
        assert statuses["survivor"]["state"] == "running" and statuses["survivor"]["processed"] > 0
        assert survivor.stop() == 0
        assert_clean_output(leaving, survivor)
    record("workers_sigkill_sigterm_race", jobs=len(ids), workers=3, held_by_killed=len(held),
           completed_by_its_last_request=len(late),
           sigterm_exit_seconds=sigterm_exit, drained_after_kill_seconds=recovered,
           queue_stuck_timeout_seconds=STUCK_TIMEOUT_MS / 1000, lists_correct_after_drain=lists, lost_items=0,
           duplicate_provider_embeddings=extra,
           processed={k: v.get("processed") for k, v in statuses.items()})


def test_memory_guard_in_a_worker_process_claims_nothing(app, db_uri, tmp_path, procs):
    ids = add_jobs(60)
    with EmbeddingsServer() as provider:
        paused = procs.worker(worker_env(db_uri, provider, tmp_path, WORKER_MEMORY_THRESHOLD="0.0001"))
        paused_in = seconds_until("the pause", lambda: status_of_pid(paused.pid).get("state") == "paused", 60,
                                  every=0.1, processes=[paused], seen=queue_state)
        time.sleep(2)                 # ten polls: still nothing claimed
        assert provider.requests == 0
        assert queue.counts()["pending"] == len(ids)
        assert QueueItem._get_collection().count_documents({"attempts": {"$ne": 0}}) == 0
        status = status_of_pid(paused.pid)
        assert "memory at" in status["reason"] and status["processed"] == 0

        helper = procs.worker(worker_env(db_uri, provider, tmp_path))
        drained_in = seconds_until("the other worker to drain", lambda: drained(ids), 60, processes=[helper, paused],
                                   seen=queue_state)
        lists = wait_lists_correct(20, [helper])
        assert_end_state(ids)
        assert provider_duplicates(provider, ids)[:2] == (0, 0)
        assert status_of_pid(paused.pid)["state"] == "paused" and status_of_pid(paused.pid)["processed"] == 0
        assert paused.stop() == 0 and helper.stop() == 0
        assert "paused claiming" in paused.output()
        assert_clean_output(paused, helper)
    record("memory_guard_process", jobs=len(ids), paused_after_start_seconds=paused_in, claimed_while_paused=0,
           drained_by_other_worker_seconds=drained_in, lists_correct_after_drain=lists)


def test_memory_guard_pauses_and_resumes_on_its_schedule(make_app):
    """In-process (the probe is injected): the scheduler's next poll after memory falls resumes claiming."""
    with EmbeddingsServer() as provider:
        app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=provider.base_url,
                       EMBEDDING_WORKER_INTERVAL=200, WORKER_HEARTBEAT_INTERVAL=1000, SIMILARITY_MIN_SCORE=MIN_SCORE,
                       SIMILARITY_TOP_N=TOP_N)
        with app.app_context():
            ids = add_jobs(80)
            memory = {"fraction": 0.99}
            worker = Worker.from_app(app, memory_probe=lambda: memory["fraction"])
            worker.start()
            try:
                seconds_until("the pause", lambda: worker.state == "paused", 10, seen=queue_state)
                time.sleep(1)
                assert provider.requests == 0 and queue.counts()["pending"] == len(ids)
                memory["fraction"] = 0.30
                first = seconds_until("the first item after the resume", lambda: completed_count() > 0, 20, every=0.02,
                                      seen=queue_state)
                done = seconds_until("the drain", lambda: drained(ids), 30, seen=queue_state) + first
                assert worker.state == "running"
                memory["fraction"] = 0.99            # and pauses again between batches
                seconds_until("the second pause", lambda: worker.state == "paused", 10, seen=queue_state)
            finally:
                worker.stop()
            lists = wait_lists_correct(10)
            assert_end_state(ids)
    record("memory_guard_resume", jobs=len(ids), first_completion_after_memory_fell_seconds=first,
           drained_after_memory_fell_seconds=done, poll_interval_seconds=0.2, lists_correct_after_drain=lists)
