"""Alerts: pure rules on hand-made snapshots, then real emails through a real SMTP server (aiosmtpd on loopback)."""
from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from bson import ObjectId

from jobflow.alerts import Snapshot, check_alerts, due_email, evaluate, gather, send_test_email
from jobflow.alerts.rules import DegradedWorker, assess
from jobflow.config import load_settings
from jobflow.db import free_port
from jobflow.embeddings import provider_model
from jobflow.jobs import queue
from jobflow.models import Alert, Job, QueueItem, WorkerStatus
from jobflow.timeutil import utcnow
from tests.support.mail import Inbox

SETTINGS = load_settings({})   # seed defaults: 10 failures, 100 pending, dead after 180 s, drop 0.05, floor off
NOW = utcnow()


def fired(snapshot: Snapshot, **overrides) -> dict:
    return {f.key: f for f in evaluate(snapshot, {**SETTINGS, **overrides})}


def healthy(**fields) -> Snapshot:
    """A snapshot with a live worker and nothing wrong, changed by ``fields``."""
    base = {"at": NOW, "live_heartbeat": NOW - timedelta(seconds=20), "last_heartbeat": NOW - timedelta(seconds=20),
            "live_workers": 1, "queue": {"pending": 3, "processing": 1, "failed": 0}}
    return Snapshot(**{**base, **fields})


# ----- rules: pure, no database ---------------------------------------------------------------------------

def test_a_healthy_snapshot_fires_nothing():
    assert evaluate(healthy(), SETTINGS) == []
    assert {f.key for f in assess(healthy(), SETTINGS)} == {"failures", "queue", "workers", "provider", "coverage",
                                                          "capture"}


def test_capture_down_is_critical_and_behind_a_warning():
    down = fired(healthy(capture={"state": "down", "mode": "stream",
                                  "problem": "change capture is down: no worker has followed the jobs collection for 95 s"}))
    assert down["capture"].severity == "critical" and "95 s" in down["capture"].summary
    behind = fired(healthy(capture={"state": "behind", "mode": "stream", "lag": {"p99": 75000},
                                    "problem": "change capture is 75000 ms behind"}))
    assert behind["capture"].severity == "warning" and behind["capture"].figures["lag p99 (last minute)"] == "75000 ms"
    assert "capture" not in fired(healthy(capture={"state": "ok", "mode": "stream"}))
    assert "capture" not in fired(healthy(capture={"state": "off"}))


def test_failures_in_the_last_hour_over_the_threshold():
    assert "failures" not in fired(healthy(failed_final=7, failed_retrying=3))         # 10, not over 10
    finding = fired(healthy(failed_final=8, failed_retrying=3))["failures"]
    assert finding.figures["failed in the last hour"] == 11
    assert finding.page == "/admin/embeddings/failures"
    assert "11 queue items failed" in finding.summary


def test_pending_queue_over_the_threshold():
    assert "queue" not in fired(healthy(queue={"pending": 100}))
    finding = fired(healthy(queue={"pending": 101, "processing": 2}))["queue"]
    assert finding.figures["pending"] == 101 and finding.figures["alert above"] == 100
    assert fired(healthy(queue={"pending": 6}), ALERT_THRESHOLD_QUEUE_SIZE=5)["queue"].summary.startswith("6 items")


def test_no_live_worker_for_longer_than_the_dead_threshold():
    four_min = NOW - timedelta(minutes=4)
    finding = fired(healthy(live_heartbeat=four_min, last_heartbeat=four_min, live_workers=0))["workers"]
    assert finding.severity == "critical" and "4 min" in finding.summary
    assert "workers" in fired(healthy(live_heartbeat=None, last_heartbeat=None, live_workers=0))
    # Stopped cleanly a minute ago (a deploy): it gets WORKER_DEAD_THRESHOLD to come back.
    assert "workers" not in fired(healthy(live_heartbeat=None, last_heartbeat=NOW - timedelta(minutes=1),
                                          live_workers=0))
    assert "workers" in fired(healthy(live_heartbeat=None, last_heartbeat=NOW - timedelta(minutes=5), live_workers=0))
    # Only workers switched off: it fires, and says so.
    off = fired(healthy(live_heartbeat=None, last_heartbeat=None, live_workers=0, disabled_workers=2))["workers"]
    assert "2 worker(s) run with embedding switched off" in off.summary and off.figures["switched off"] == 2


def test_provider_unhealthy_on_a_degraded_worker_or_repeated_rate_limits():
    bad_key = DegradedWorker("host:1:abc", "the provider rejected the API key (401)", "openai", "text-embedding-3-small")
    finding = fired(healthy(degraded=(bad_key,)))["provider"]
    assert finding.severity == "critical"
    assert "rejected the API key" in finding.summary and finding.figures["reason"].startswith("the provider")
    assert "provider" not in fired(healthy(rate_limits=4))
    limited = fired(healthy(rate_limits=5))["provider"]
    assert limited.severity == "warning" and "5 rate limits" in limited.summary


def test_coverage_falling_within_the_hour_or_below_the_floor():
    samples = ((NOW - timedelta(minutes=30), 0.98), (NOW - timedelta(minutes=1), 0.97))
    finding = fired(healthy(active_jobs=100, embedded_jobs=90, coverage_samples=samples))["coverage"]
    assert finding.figures["coverage"] == "90.0%" and finding.figures["highest in the last hour"] == "98.0%"
    assert "coverage" not in fired(healthy(active_jobs=100, embedded_jobs=94, coverage_samples=samples))  # 4 points
    old = ((NOW - timedelta(minutes=61), 0.98),)
    assert "coverage" not in fired(healthy(active_jobs=100, embedded_jobs=50, coverage_samples=old))
    assert "coverage" not in fired(healthy(active_jobs=100, embedded_jobs=90))        # first check: nothing to compare
    assert "coverage" in fired(healthy(active_jobs=100, embedded_jobs=90), ALERT_COVERAGE_MIN=0.95)
    assert "coverage" not in fired(healthy(active_jobs=0, embedded_jobs=0, coverage_samples=samples),
                                   ALERT_COVERAGE_MIN=0.95)


def test_which_email_is_due():
    on = {**SETTINGS, "ALERT_EMAIL_ENABLED": True, "ALERT_REMINDER_INTERVAL": 3_600_000}
    sent_at = NOW - timedelta(minutes=59)
    assert due_email({"status": "open", "owed": "opened"}, NOW, on) == "opened"
    assert due_email({"status": "open", "lastNotifiedAt": sent_at}, NOW, on) is None
    assert due_email({"status": "open", "lastNotifiedAt": sent_at}, NOW + timedelta(minutes=1), on) == "reminder"
    assert due_email({"status": "open"}, NOW, on) == "opened"          # emails turned on while it was open
    assert due_email({"status": "resolved", "owed": "resolved"}, NOW, on) == "resolved"
    assert due_email({"status": "resolved", "lastNotifiedAt": sent_at}, NOW, on) is None
    assert due_email({"status": "open", "owed": "opened"}, NOW, SETTINGS) is None   # ALERT_EMAIL_ENABLED=false


# ----- figures from the database ----------------------------------------------------------------------------

def test_gather_reads_the_figures(app):
    now = utcnow()
    items = QueueItem._get_collection()
    job = ObjectId
    items.insert_many([
        {"jobId": job(), "status": "failed", "finishedAt": now - timedelta(minutes=10), "errorHistory": []},
        {"jobId": job(), "status": "failed", "finishedAt": now - timedelta(hours=2), "errorHistory": []},
        {"jobId": job(), "status": "pending", "errorHistory": [
            {"at": now - timedelta(minutes=5), "error": "rate limited by the provider (429)"},
            {"at": now - timedelta(minutes=3), "error": "Rate limited again"}]},
        {"jobId": job(), "status": "pending", "errorHistory": [{"at": now - timedelta(hours=3), "error": "timeout"}]},
        {"jobId": job(), "status": "pending", "errorHistory": []},
    ])
    statuses = WorkerStatus._get_collection()
    statuses.insert_many([
        {"workerId": "a", "state": "stopped", "lastHeartbeat": now - timedelta(seconds=5)},
        {"workerId": "b", "state": "degraded", "reason": "unknown model", "lastHeartbeat": now - timedelta(seconds=30),
         "rateLimitedAt": [now - timedelta(minutes=1), now - timedelta(minutes=40)]},
        {"workerId": "c", "state": "degraded", "reason": "old", "lastHeartbeat": now - timedelta(hours=1)},
    ])
    jobs = Job._get_collection()
    model = provider_model(app.config)
    jobs.insert_many([{"status": "active", "embedding": {"status": "completed", "model": model}} for _ in range(3)]
                     + [{"status": "active", "embedding": {"status": "pending"}},
                        {"status": "active", "embedding": {"status": "completed", "model": "an-older-model"}},
                        {"status": "closed", "embedding": {"status": "completed", "model": model}}])
    s = gather(app.config, now)
    assert (s.failed_final, s.failed_retrying, s.failures) == (1, 1, 2)
    assert s.pending == 3
    assert s.rate_limits == 3              # two queue errors and one worker record within 15 min
    assert s.live_heartbeat == now - timedelta(seconds=30) and s.last_heartbeat == now - timedelta(seconds=5)
    assert s.live_workers == 1
    assert [(d.worker_id, d.reason) for d in s.degraded] == [("b", "unknown model")]
    # Coverage as the pages show it: active jobs embedded by the configured model.
    assert (s.active_jobs, s.embedded_jobs, s.coverage) == (5, 3, 0.6)
    # A worker switched off (EMBEDDING_WORKER_ENABLED=false) heartbeats, but is never "heard from" as a worker.
    statuses.insert_one({"workerId": "off", "state": "stopped", "disabled": True, "lastHeartbeat": now})
    s = gather(app.config, now)
    assert s.last_heartbeat == now - timedelta(seconds=5) and s.disabled_workers == 1 and s.live_workers == 1


def test_coverage_drop_opens_an_alert_from_the_stored_figure(app):
    now = utcnow()
    heartbeat(now)
    ids = Job._get_collection().insert_many(
        [{"status": "active", "embedding": {"status": "completed", "model": provider_model(app.config)}}
         for _ in range(10)]).inserted_ids
    assert check_alerts(app, now=now).opened == []
    Job._get_collection().update_many({"_id": {"$in": ids[:2]}}, {"$set": {"embedding.status": "pending"}})
    later = now + timedelta(minutes=1)
    heartbeat(later)
    assert check_alerts(app, now=later).opened == ["coverage"]
    alert = Alert.objects.get(key="coverage", status="open")
    assert alert.figures["coverage"] == "80.0%" and alert.figures["highest in the last hour"] == "100.0%"


# ----- emails through a real SMTP server ----------------------------------------------------------------------

@pytest.fixture
def smtp():
    box = Inbox().start()
    yield box
    box.stop()


BASE = "https://jobs.example.com"


@pytest.fixture
def mail_app(make_app, smtp):
    """An app that sends alert emails to the test SMTP server; alert above 5 pending, reminders hourly."""
    def make(**overrides):
        config = {"ALERT_EMAIL_ENABLED": True, "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": smtp.port,
                  "MAIL_USE_TLS": False, "MAIL_SUPPRESS_SEND": False, "MAIL_TIMEOUT": 2000,
                  "ALERT_EMAIL_TO": ["ops@example.com"], "ALERT_EMAIL_FROM": "alerts@example.com",
                  "ALERT_THRESHOLD_QUEUE_SIZE": 5, "ALERT_REMINDER_INTERVAL": 3_600_000, "PUBLIC_BASE_URL": BASE}
        config.update(overrides)
        return make_app(**config)
    return make


def heartbeat(at):
    """One live worker, heard from at ``at`` (the check runs in a worker, so there is one)."""
    WorkerStatus._get_collection().update_one({"workerId": "w1"}, {"$set": {"state": "running", "lastHeartbeat": at}},
                                              upsert=True)


def check_at(app, at):
    heartbeat(at)
    return check_alerts(app, now=at)


def fill_queue(n: int) -> list:
    ids = [ObjectId() for _ in range(n)]
    for job_id in ids:
        assert queue.enqueue(job_id)
    return ids


def parts(message) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def test_one_email_on_open_none_before_the_reminder_then_a_reminder_and_one_on_resolve(mail_app, smtp):
    app = mail_app()
    inbox = smtp
    fill_queue(6)
    t0 = utcnow()

    report = check_at(app, t0)
    assert report.opened == ["queue"] and report.sent == [("queue", "opened")]
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert inbox.recipients[0] == ["ops@example.com"] and message["From"] == "alerts@example.com"
    assert "Alert: Embedding queue is backing up" in message["Subject"] and "6 items pending" in message["Subject"]
    text, html = parts(message)
    link = f"{BASE}/admin/embeddings/queue"
    assert "6 items pending (alert above 5)" in text and "pending: 6" in text and link in text
    assert "<strong>6</strong>" in html and f'href="{link}"' in html and f"{BASE}/admin/embeddings/alerts" in html

    # Still open: nothing more before the reminder period is over.
    for minutes in (1, 30, 59):
        assert check_at(app, t0 + timedelta(minutes=minutes)).sent == []
    assert len(inbox.messages) == 1

    # Past the period: one reminder, and the period starts again.
    assert check_at(app, t0 + timedelta(minutes=61)).sent == [("queue", "reminder")]
    assert check_at(app, t0 + timedelta(minutes=62)).sent == []
    assert len(inbox.messages) == 2 and inbox.messages[1]["Subject"].startswith("[JobFlow Similar] Still open:")
    assert "Open for: 61 min" in parts(inbox.messages[1])[0]

    # The queue drains: one email saying so, then silence.
    QueueItem._get_collection().delete_many({})
    assert check_at(app, t0 + timedelta(minutes=70)).resolved == ["queue"]
    assert check_at(app, t0 + timedelta(minutes=200)).sent == []
    assert len(inbox.messages) == 3
    resolved = inbox.messages[2]
    assert resolved["Subject"] == "[JobFlow Similar] Resolved: Embedding queue is backing up"
    text, html = parts(resolved)
    assert "pending: 0" in text and "open for 70 min" in text and link in text

    alert = Alert.objects.get(key="queue")
    assert alert.status == "resolved" and alert.notifications == 3
    assert [h["event"] for h in alert.history] == ["opened", "emailed", "reminder", "resolved", "emailed"]
    assert alert.history[0]["figures"]["pending"] == 6


def test_a_mail_server_that_is_down_is_logged_and_retried(mail_app, smtp, caplog):
    app = mail_app(MAIL_PASSWORD="s3cret-smtp-pass")
    fill_queue(6)
    smtp.stop()
    t0 = utcnow()
    caplog.set_level(logging.INFO, logger="jobflow.alerts")

    report = check_at(app, t0)                                   # does not raise
    assert report.opened == ["queue"] and report.sent == []
    assert [(key, kind) for key, kind, _ in report.failed] == [("queue", "opened")]
    failures = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(failures) == 1
    line = failures[0].getMessage()
    assert "\n" not in line and "Traceback" not in line and "s3cret" not in line
    assert failures[0].exc_info is None and "ConnectionRefusedError" in line
    check_at(app, t0 + timedelta(minutes=1))                     # still down: the same history entry counts it
    alert = Alert.objects.get(key="queue")
    assert [h["event"] for h in alert.history] == ["opened", "notify_failed"]
    assert alert.history[1]["attempts"] == 2 and alert.history[1]["email"] == "opened"
    assert alert.lastNotifiedAt is None and alert.owed == "opened"

    smtp.start()
    assert check_at(app, t0 + timedelta(minutes=2)).sent == [("queue", "opened")]
    assert len(smtp.messages) == 1 and smtp.messages[0]["Subject"].startswith("[JobFlow Similar] Alert:")
    assert check_at(app, t0 + timedelta(minutes=3)).sent == []
    alert.reload()
    assert alert.owed is None and alert.notifications == 1


def test_a_mail_server_that_never_answers_times_out(mail_app):
    # Accepts connections and never says a word: without a timeout the check would hang for ever.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        app = mail_app(MAIL_PORT=listener.getsockname()[1], MAIL_TIMEOUT=300)
        fill_queue(6)
        started = time.monotonic()
        report = check_at(app, utcnow())
        assert time.monotonic() - started < 5
        assert report.failed and "timed out" in report.failed[0][2].lower()
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


def test_alert_emails_off_the_alert_is_stored_and_listed_but_no_email(mail_app, smtp):
    from jobflow.alerts import list_alerts
    app = mail_app(ALERT_EMAIL_ENABLED=False)
    fill_queue(6)
    t0 = utcnow()
    assert check_at(app, t0).opened == ["queue"]
    assert check_at(app, t0 + timedelta(hours=3)).sent == []
    QueueItem._get_collection().delete_many({})
    assert check_at(app, t0 + timedelta(hours=4)).resolved == ["queue"]
    assert smtp.messages == []
    [alert] = list_alerts()
    assert alert.key == "queue" and alert.status == "resolved" and alert.notifications == 0
    assert [h["event"] for h in alert.history] == ["opened", "resolved"]
    assert list_alerts(status="open") == []


def test_send_a_test_email(mail_app, smtp):
    app = mail_app(ALERT_EMAIL_ENABLED=False)
    result = send_test_email(app)
    assert result.ok and "ops@example.com" in result.message and "ALERT_EMAIL_ENABLED=false" in result.message
    assert send_test_email(app, to="someone@example.com").ok
    assert [r for r in smtp.recipients] == [["ops@example.com"], ["someone@example.com"]]
    text, html = parts(smtp.messages[0])
    assert "the mail settings work" in text and f"127.0.0.1:{smtp.port}" in html
    smtp.stop()
    failed = send_test_email(app)
    assert not failed.ok and "\n" not in failed.message and "ConnectionRefusedError" in failed.message
    assert not send_test_email(mail_app(MAIL_SERVER="")).ok


def test_html_bodies_escape_what_they_show(app):
    from jobflow.alerts.notify import render_alert_email
    alert = {"key": "provider", "title": "Embedding provider unhealthy", "summary": "worker w: <b>bad</b> key",
             "figures": {"reason": "<script>x</script>"}, "page": "/admin/embeddings/workers", "openedAt": NOW}
    subject, text, html = render_alert_email(alert, "opened", NOW, app.config)
    assert "<script>" in text and "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "&lt;b&gt;bad&lt;/b&gt;" in html
    assert subject == "[JobFlow Similar] Alert: Embedding provider unhealthy - worker w: <b>bad</b> key"


def test_as_a_leased_periodic_job_one_process_checks_and_a_dead_mail_server_stops_nothing(mail_app, smtp, caplog):
    from types import SimpleNamespace

    from jobflow.worker.schedule import PeriodicJob, _guarded
    app = mail_app()
    fill_queue(6)
    heartbeat(utcnow())
    smtp.stop()
    row = PeriodicJob("check-alerts", lambda w: check_alerts(w.app), lambda s: 60_000, lease=True)
    workers = [SimpleNamespace(app=app, settings=app.config, worker_id=f"host:{n}", stopping=threading.Event())
               for n in (1, 2)]
    caplog.set_level(logging.INFO)
    for worker in workers:
        _guarded(row, worker)()                 # the second one finds the lease taken
    assert not [r for r in caplog.records if "periodic job" in r.getMessage()]
    alert = Alert.objects.get(key="queue")
    assert [h["event"] for h in alert.history] == ["opened", "notify_failed"] and alert.history[1]["attempts"] == 1
    smtp.start()
    for worker in workers:
        _guarded(row, worker)()
    assert len(smtp.messages) == 1


def test_an_email_due_in_two_processes_at_once_goes_out_once(mail_app, smtp):
    from mongoengine import NotUniqueError

    from jobflow.alerts.notify import notify
    app = mail_app(ALERT_EMAIL_ENABLED=False)
    fill_queue(6)
    now = utcnow()
    check_at(app, now)
    stale = Alert._get_collection().find_one({"key": "queue"})   # both processes read it before either sent
    with app.app_context():
        assert notify(app, stale, "opened", now) == (True, None)
        assert notify(app, stale, "opened", now) == (False, None)
    assert len(smtp.messages) == 1
    with pytest.raises(NotUniqueError):                            # and never two open alerts of one rule
        Alert(key="queue", status="open", title="again").save()


def test_dashboard_sends_a_test_email_after_confirmation(make_app, tmp_path):
    """The alerts page's "send a test email": a confirmation first, then one email through the real SMTP server."""
    import re

    from jobflow.models import AdminUser

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope)
            return "250 OK"

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app = make_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_USE_TLS=False, MAIL_SUPPRESS_SEND=False,
                       ALERT_EMAIL_TO=["ops@example.com"])
        client = app.test_client()
        with app.app_context():
            user = AdminUser(email="admin@example.com", role="admin")
            user.set_password("correct horse battery")
            user.save()
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        client.post("/login", data={"email": "admin@example.com", "password": "correct horse battery",
                                    "csrf_token": token})
        alerts = client.get("/admin/embeddings/alerts").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', alerts).group(1)
        ask = client.post("/admin/embeddings/alerts/test-email", data={"csrf_token": token})
        assert ask.status_code == 200 and "ops@example.com" in ask.get_data(as_text=True)
        assert inbox.messages == []                      # nothing sent before the confirmation
        done = client.post("/admin/embeddings/alerts/test-email", data={"csrf_token": token, "confirm": "yes"},
                           follow_redirects=True)
        assert done.status_code == 200
        assert len(inbox.messages) == 1 and inbox.messages[0].rcpt_tos == ["ops@example.com"]
    finally:
        controller.stop()
