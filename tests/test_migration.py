"""flask migrate-embeddings and flask test-embeddings."""

from jobflow.embeddings.text import RECIPE, job_text, text_hash
from jobflow.models import Job, QueueItem
from jobflow.timeutil import utcnow


def seed_jobs():
    """Jobs in every state a migration meets; returns the ids that need an embedding."""
    coll = Job._get_collection()
    now = utcnow()
    current = {"title": "Current", "description": "ok", "status": "active", "createdAt": now}
    current["embedding"] = {"status": "completed", "model": "multilingual-e5-small",
                            "textHash": text_hash(job_text(current)), "recipe": RECIPE}
    docs = {
        "current": current,
        "never": {"title": "Never embedded", "description": "x", "status": "active"},
        "failed": {"title": "Failed", "description": "x", "status": "active", "embedding": {"status": "failed"}},
        "other_model": {"title": "Old model", "description": "x", "status": "active",
                        "embedding": {"status": "completed", "model": "text-embedding-ada-002", "textHash": "x"}},
        "edited": {"title": "Edited", "description": "x", "status": "active",
                   "embedding": {"status": "completed", "model": "multilingual-e5-small", "textHash": "stale"}},
        "closed": {"title": "Closed", "description": "x", "status": "closed"},
    }
    ids = {name: coll.insert_one(doc).inserted_id for name, doc in docs.items()}
    return ids


def test_dry_run_counts_and_changes_nothing(app):
    seed_jobs()
    result = app.test_cli_runner().invoke(args=["migrate-embeddings", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = {l.split(":")[0].strip(): int(l.split(":")[1]) for l in result.output.splitlines()
             if ":" in l and l.split(":")[1].strip().isdigit()}
    assert lines["jobs in database"] == 6 and lines["active jobs"] == 5
    assert lines["with a current embedding"] == 1 and lines["embedded by another model"] == 1
    assert lines["text changed since"] == 1 and lines["failed before"] == 1 and lines["never embedded"] == 1
    assert lines["to queue now"] == 4
    assert "nothing changed" in result.output
    assert QueueItem.objects.count() == 0


def test_dry_run_environment_variable_is_honoured(app):
    """The original specification's ``DRY_RUN=true npm run migrate:embeddings``."""
    seed_jobs()
    result = app.test_cli_runner().invoke(args=["migrate-embeddings"], env={"DRY_RUN": "true"})
    assert result.exit_code == 0, result.output
    assert "dry run: would queue 4 jobs; nothing changed" in result.output
    assert QueueItem.objects.count() == 0


def test_countdown_on_a_terminal_can_be_cancelled(app, monkeypatch):
    """On a terminal a real migration waits a few seconds first; Ctrl+C then changes nothing; --yes skips it."""
    import time

    from jobflow import cli
    seed_jobs()
    monkeypatch.setattr(cli, "_on_terminal", lambda: True)

    def interrupted(seconds):
        raise KeyboardInterrupt
    monkeypatch.setattr(time, "sleep", interrupted)
    cancelled = app.test_cli_runner().invoke(args=["migrate-embeddings"])
    assert cancelled.exit_code == 1 and "Ctrl+C to cancel" in cancelled.output and "cancelled" in cancelled.output
    assert QueueItem.objects.count() == 0
    confirmed = app.test_cli_runner().invoke(args=["migrate-embeddings", "--yes"])
    assert confirmed.exit_code == 0 and "starting in" not in confirmed.output
    assert QueueItem.objects.count() == 4


def test_migration_queues_backfill_once(app):
    ids = seed_jobs()
    from jobflow.jobs import queue
    queue.enqueue(ids["never"], priority=queue.PRIORITY_LIVE)  # a live edit already waiting
    runner = app.test_cli_runner()
    first = runner.invoke(args=["migrate-embeddings"])
    assert first.exit_code == 0, first.output
    assert "queued 3 jobs at back-fill priority" in first.output
    items = {i.jobId: i for i in QueueItem.objects}
    assert set(items) == {ids[n] for n in ("never", "failed", "other_model", "edited")}
    assert items[ids["never"]].priority == queue.PRIORITY_LIVE          # live edits stay ahead
    assert items[ids["failed"]].priority == queue.PRIORITY_BACKFILL
    assert items[ids["failed"]].metadata["source"] == "migration" and items[ids["failed"]].metadata["migrationId"]
    second = runner.invoke(args=["migrate-embeddings"])
    assert second.exit_code == 0 and "nothing to queue" in second.output
    assert QueueItem.objects.count() == 4                                # nothing queued twice


def test_test_embeddings_runs_the_eight_checks(app):
    Job(title="Nurse", description="Night shifts", status="active").save()
    result = app.test_cli_runner().invoke(args=["test-embeddings"])
    assert result.exit_code == 0, result.output
    lines = [l for l in result.output.splitlines() if l.startswith("[")]
    assert len(lines) == 8 and all(": ok - " in l for l in lines)
    assert "384 dimensions" in result.output
    assert "[8/8] change capture: ok - stream: the database offers change streams (CHANGE_CAPTURE=auto)" in result.output
    assert QueueItem.objects.count() == 0  # the probe leaves nothing behind


def test_test_embeddings_says_why_capture_polls_and_fails_a_forced_stream(make_app, tmp_path):
    from tests.support.database import DatabaseServer
    server = DatabaseServer(tmp_path / "db", "--standalone")
    server.start()
    try:
        for setting, code, expected in (
                ("auto", 0, "[8/8] change capture: ok - poll: the database offers no change streams"),
                ("stream", 1, "[8/8] change capture: FAILED - CHANGE_CAPTURE=stream, but the database offers no "
                              "change streams")):
            app = make_app(MONGODB_URI=server.uri("standalone"), CHANGE_CAPTURE=setting)
            with app.app_context():
                result = app.test_cli_runner().invoke(args=["test-embeddings"])
            assert result.exit_code == code and expected in result.output, result.output
    finally:
        server.remove()


def test_test_embeddings_names_a_refused_key(make_app):
    from tests.support.openai_server import EmbeddingsServer
    with EmbeddingsServer(dimensions=1536) as server:
        app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY="sk-wrong-key-123456", OPENAI_BASE_URL=server.base_url)
        result = app.test_cli_runner().invoke(args=["test-embeddings"])
    assert result.exit_code == 1
    assert "embedding generation: FAILED - the provider refused the API key" in result.output
    assert "sk-wrong-key-123456" not in result.output
