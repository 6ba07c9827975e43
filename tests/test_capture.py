"""Change capture against a real SecantusDB: writes made straight into the database, as another application
makes them, reach the queue, the lists and the misfit list; the position survives a restart; lost history is
swept; a server without change streams is polled."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import timedelta

import pytest
from bson import ObjectId

from jobflow.capture.decide import decide, misfit_reason
from jobflow.capture.follow import LEASE, Capture
from jobflow.embeddings.text import job_text, text_hash
from jobflow.models import CaptureState, Job, JobChange, JobDeletion, JobMisfit, Lease, QueueItem
from jobflow.timeutil import utcnow
from tests.support.database import DatabaseServer
from tests.support.waiting import wait_until

SETTINGS = {"CHANGE_CAPTURE": "auto", "CHANGE_CAPTURE_LEASE": 15000, "CHANGE_CAPTURE_SWEEP_INTERVAL": 3_600_000}


def board_job(title="Nurse", **fields) -> dict:
    return {"title": title, "description": f"{title} wanted for the night shift.", "company": "Spitali",
            "status": "active", "createdAt": utcnow(), "updatedAt": utcnow(), **fields}


def embedded(title="Nurse", **fields) -> dict:
    """A posting as the worker leaves it: embedded from its current text, with a list."""
    doc = board_job(title, **fields)
    doc["embedding"] = {"status": "completed", "textHash": text_hash(job_text(doc)), "model": "m"}
    doc["similarJobs"] = [{"jobId": ObjectId(), "score": 0.9}]
    return doc


def items(job_id, status="pending") -> list[dict]:
    return list(QueueItem._get_collection().find({"jobId": job_id, "status": status}))


@contextmanager
def own_server(make_app, tmp_path, name: str, *args: str):
    """An app on a SecantusDB server of its own (``args``: the server's options), inside the app's context; the
    server (to stop or restart) is yielded."""
    server = DatabaseServer(tmp_path / "db", *args)
    server.start()
    try:
        with make_app(MONGODB_URI=server.uri(name)).app_context():
            yield server
    finally:
        server.remove()


def follow_until(capture: Capture, what: str, check, timeout: float = 30):
    """Run the capture (as the scheduler does each second) until ``check`` holds."""
    def step():
        capture.run()
        return check()
    return wait_until(what, step, timeout, every=0.05)


@pytest.fixture
def capture(app):
    c = Capture(SETTINGS, "worker-a")
    c.run()                 # the first run opens the stream and stores where it starts
    yield c
    c.stopping.set()
    c.stop()


# ----- what a document calls for ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, reason", [
    ({"title": 42}, "title is a int, not text"),
    ({"title": ""}, "title is missing"),
    ({"title": None}, "title is missing"),
    ({"createdAt": "not a date"}, "createdAt is not a date"),
    ({"embedding": "garbage"}, "embedding is not a document"),
    ({"similarJobs": {"a": 1}}, "similarJobs is not a list"),
    ({"_id": "job-17"}, "_id is a str, not an ObjectId"),
])
def test_a_document_that_does_not_fit_is_named_with_its_reason(change, reason):
    doc = {"_id": ObjectId(), **board_job(), **change}
    assert misfit_reason(doc) == reason
    assert decide(doc, open_item=False, text_touched=True).action == "misfit"


def test_only_the_text_and_the_status_call_for_work():
    doc = {"_id": ObjectId(), **embedded()}
    assert decide(dict(doc, salaryRange="2,000 EUR"), False, False).action == "none"
    assert decide(dict(doc, title="Head Nurse"), False, True).action == "embed"
    assert decide(dict(doc, status="closed"), False, False).action == "leave"
    assert decide(None, False, False).reason == "deleted"
    fresh = {"_id": ObjectId(), **board_job()}
    assert decide(fresh, open_item=False, text_touched=False).action == "embed"
    assert decide(fresh, open_item=True, text_touched=False).action == "none"      # the API queued it already
    assert decide(dict(doc, title="Head Nurse"), open_item=True, text_touched=True).action == "embed"


# ----- the follower on a real change stream ------------------------------------------------------------------------

def test_writes_by_another_application_reach_the_queue_and_leave_the_lists(app, capture, caplog):
    caplog.set_level(logging.INFO, "jobflow.capture")
    jobs = Job._get_collection()
    kept, retitled, closed, deleted = (jobs.insert_one(embedded(t)).inserted_id
                                       for t in ("Chef", "Driver", "Teacher", "Cashier"))
    follow_until(capture, "the product's setup writes to be read", lambda: True)
    QueueItem._get_collection().delete_many({})          # the inserts above were read as new jobs: start clean

    new = jobs.insert_many([board_job(f"Welder {i}") for i in range(3)]).inserted_ids
    jobs.update_one({"_id": kept}, {"$set": {"salaryRange": "900 EUR", "updatedAt": utcnow()}})
    jobs.update_one({"_id": retitled}, {"$set": {"title": "Bus Driver"}})
    jobs.update_one({"_id": closed}, {"$set": {"status": "closed"}})
    jobs.delete_one({"_id": deleted})
    misfit = jobs.insert_one(board_job("Broken", createdAt="not a date")).inserted_id
    garbage = jobs.insert_one(board_job("Garbage", embedding="garbage")).inserted_id
    # The product's own writes come back as nothing.
    jobs.update_one({"_id": kept}, {"$set": {"embedding.status": "completed", "similarJobs": []}})

    follow_until(capture, "every change handled",
                 lambda: all(items(i) for i in new) and items(retitled) and JobMisfit.objects(id=misfit).first()
                 and JobDeletion.objects(id=deleted).first() and JobChange.objects(id=closed).first())
    assert items(new[0])[0]["metadata"]["source"] == "capture"
    assert items(kept) == [], "a salary change must queue nothing"
    assert items(closed) == [] and items(misfit) == [] and items(garbage) == []
    assert JobMisfit.objects.get(id=garbage).reason == "embedding is not a document"
    doc = jobs.find_one({"_id": retitled})
    assert doc["similarJobs"] == [] and doc["embedding"]["status"] == "pending", "the old list stops being served"
    assert JobMisfit.objects.get(id=misfit).reason == "createdAt is not a date"
    assert f"job {misfit} cannot be used and is not embedded: createdAt is not a date" in caplog.text
    state = CaptureState._get_collection().find_one({"_id": "jobs"})
    assert state["mode"] == "stream" and state["owner"] == "worker-a" and state["token"]
    assert state["lags"] and all(0 <= lag["ms"] < 30_000 for lag in state["lags"])
    # Fixed by its writer: off the misfit list, and queued.
    jobs.update_one({"_id": misfit}, {"$set": {"createdAt": utcnow(), "title": "Fixed"}})
    follow_until(capture, "the fixed document queued", lambda: items(misfit) and not JobMisfit.objects(id=misfit).first())


def test_a_new_capturer_continues_from_the_stored_position(app, capture):
    jobs = Job._get_collection()
    follow_until(capture, "the start stored", lambda: CaptureState.objects(id="jobs").first().token)
    capture.stopping.set()
    capture.stop()
    assert Lease.objects(name=LEASE).first() is None, "a stopping capturer hands the lease on"
    written_while_down = jobs.insert_many([board_job(f"Baker {i}") for i in range(40)]).inserted_ids
    successor = Capture(SETTINGS, "worker-b")
    try:
        follow_until(successor, "the writes made while no one captured",
                     lambda: all(items(i) for i in written_while_down))
        assert QueueItem.objects.count() == 40
        assert CaptureState.objects(id="jobs").first().owner == "worker-b"
    finally:
        successor.stop()


def test_one_capturer_at_a_time_and_the_lease_passes_when_it_goes_silent(app, capture):
    other = Capture(dict(SETTINGS, CHANGE_CAPTURE_LEASE=3000), "worker-b")
    other.run()
    assert capture.holding and not other.holding
    # worker-a dies without a word: its lease runs out, then worker-b follows.
    Lease._get_collection().update_one({"_id": LEASE}, {"$set": {"expiresAt": utcnow() - timedelta(seconds=1)}})
    job = Job._get_collection().insert_one(board_job("Plumber")).inserted_id
    follow_until(other, "worker-b to take over and queue the job", lambda: other.holding and items(job))
    other.stop()


def test_lost_history_is_swept_then_a_fresh_stream_followed(make_app, tmp_path, caplog):
    caplog.set_level(logging.INFO, "jobflow.capture")
    with own_server(make_app, tmp_path, "capture_lost") as server:
        capture = Capture(SETTINGS, "worker-a")
        follow_until(capture, "the start stored", lambda: CaptureState.objects(id="jobs").first().token)
        capture.stop()
        server.stop()
        server.args = ["--oplog-max-entries", "10"]    # the database keeps almost no history now
        server.start()
        ids = Job._get_collection().insert_many([board_job(f"Porter {i}") for i in range(1200)]).inserted_ids
        capture = Capture(SETTINGS, "worker-a")
        follow_until(capture, "the sweep to queue every job", lambda: QueueItem.objects.count() == len(ids), 120)
        # The sweep's own 1,200 queue writes may prune the fresh stream's start too: a second sweep then finds
        # nothing more to queue.
        sweep = CaptureState.objects(id="jobs").first().sweep
        assert sweep["state"] == "done" and sweep["scanned"] == 1200
        assert "the change history since the stored position is gone" in caplog.text
        assert "capture sweep done" in caplog.text and "1200 jobs compared, 1200 queued" in caplog.text
        later = Job._get_collection().insert_one(board_job("Gardener")).inserted_id
        follow_until(capture, "the fresh stream to follow", lambda: items(later))
        capture.stop()


def test_history_pruned_under_the_open_stream_is_noticed_and_swept(make_app, tmp_path, caplog):
    """A short oplog pruned while the stream follows: the server skips the pruned events without a word, and the
    capture sees its earlier position gone, compares every job and follows afresh."""
    caplog.set_level(logging.INFO, "jobflow.capture")
    with own_server(make_app, tmp_path, "capture_pruned", "--oplog-max-entries", "10"):
        capture = Capture(SETTINGS, "worker-a")
        follow_until(capture, "the start stored", lambda: CaptureState.objects(id="jobs").first().token)
        ids = Job._get_collection().insert_many([board_job(f"Baker {i}") for i in range(5)]).inserted_ids
        # The product's own writes, more than the server keeps: it prunes every 1,000 writes.
        Job._get_collection().database.scratch.insert_many([{"n": n} for n in range(1500)])
        follow_until(capture, "the pruned jobs queued", lambda: all(items(i) for i in ids), 60)
        assert "pruned history the stream had not read yet" in caplog.text
        assert CaptureState.objects(id="jobs").first().sweep["why"] == "change history pruned while following"
        later = Job._get_collection().insert_one(board_job("Gardener")).inserted_id
        follow_until(capture, "the fresh stream to follow", lambda: items(later))
        capture.stop()


def test_without_change_streams_it_polls_updated_at(make_app, tmp_path):
    with own_server(make_app, tmp_path, "capture_poll", "--standalone"):
        capture = Capture(SETTINGS, "worker-a")
        capture.run()
        state = CaptureState.objects(id="jobs").first()
        assert state.mode == "poll" and "no change streams" in state.reason
        job = Job._get_collection().insert_one(board_job("Tailor")).inserted_id
        follow_until(capture, "the polled job queued", lambda: items(job))
        capture.stop()


# ----- a board that keeps its jobs in a collection of its own ------------------------------------------------------

BOARD = dict(SETTINGS, JOBS_SOURCE_COLLECTION="postings", JOBS_ACTIVE_STATUSES=["published", "live"],
             JOBS_FIELD_MAP={"title": "headline", "description": "body", "company": "employer.name",
                             "status": "state", "updatedAt": "modified"})


def board_posting(headline="Nurse", **fields) -> dict:
    return {"headline": headline, "body": f"{headline} wanted for the night shift.",
            "employer": {"name": "Spitali", "size": 40}, "state": "published", "modified": utcnow(), "views": 0,
            **fields}


def test_a_boards_own_collection_is_copied_into_jobs_with_its_field_names(app, caplog):
    caplog.set_level(logging.INFO, "jobflow.capture")
    postings = Job._get_db()["postings"]
    before = postings.insert_many([board_posting(f"Welder {i}") for i in range(30)]).inserted_ids
    own = Job._get_collection().insert_one(board_job("Made through the API")).inserted_id
    capture = Capture(BOARD, "worker-a")
    try:
        follow_until(capture, "the postings written before the first run copied and queued",
                     lambda: all(items(i) for i in before))
        job = Job._get_collection().find_one({"_id": before[3]})
        assert (job["title"], job["company"], job["status"]) == ("Welder 3", "Spitali", "active")
        assert job["description"] == "Welder 3 wanted for the night shift." and "headline" not in job
        assert "copying every job of the board's collection postings" in caplog.text

        new = postings.insert_one(board_posting("Baker")).inserted_id
        follow_until(capture, "the new posting copied and queued", lambda: items(new))
        # Embedded from its current text, with a list (as a worker leaves it).
        Job._get_collection().update_one({"_id": new}, {"$set": {
            "embedding": {"status": "completed", "textHash": text_hash(job_text(Job._get_collection().find_one(
                {"_id": new}))), "model": "m"}, "similarJobs": [{"jobId": before[0], "score": 0.9}]}})
        QueueItem._get_collection().delete_many({"jobId": new})

        postings.update_one({"_id": new}, {"$inc": {"views": 5}, "$set": {"employer.size": 41}})
        postings.update_one({"_id": before[0]}, {"$set": {"headline": "Pipe Welder"}})
        postings.update_one({"_id": before[1]}, {"$set": {"state": "archived"}})
        postings.delete_one({"_id": before[2]})
        follow_until(capture, "the retitled, closed and deleted postings handled",
                     lambda: Job._get_collection().find_one({"_id": before[0]})["title"] == "Pipe Welder"
                     and JobChange.objects(id=before[1]).first() and JobDeletion.objects(id=before[2]).first())
        assert Job._get_collection().find_one({"_id": before[1]})["status"] == "closed"
        assert Job._get_collection().find_one({"_id": before[2]}) is None, "a deleted posting's copy is deleted"
        assert len(items(before[0])) == 1, "its waiting item embeds the new text"
        assert items(new) == [], "views and the employer's size are not in the text: nothing queued"
        assert Job._get_collection().find_one({"_id": own}), "a job of the API is never taken for a gone posting"
        state = CaptureState._get_collection().find_one({"_id": "jobs"})
        assert state["source"] == "postings" and "employer.name" in state["reason"]
    finally:
        capture.stop()


def test_a_boards_own_collection_polled_where_there_are_no_change_streams(make_app, tmp_path):
    with own_server(make_app, tmp_path, "capture_board_poll", "--standalone"):
        postings = Job._get_db()["postings"]
        old = postings.insert_one(board_posting("Tailor", modified=utcnow() - timedelta(days=3))).inserted_id
        capture = Capture(BOARD, "worker-a")
        follow_until(capture, "the old posting copied by the first sweep", lambda: items(old))
        new = postings.insert_one(board_posting("Glazier")).inserted_id
        follow_until(capture, "the polled posting queued", lambda: items(new))
        assert Job._get_collection().find_one({"_id": new})["title"] == "Glazier"
        assert "polling modified of the board's collection postings" in CaptureState.objects(id="jobs").first().reason
        capture.stop()
