"""Alerts: rules decide from the figures (``rules``), then stored alerts and emails follow (``notify``).

``check_alerts(app)`` is the periodic job: every worker runs it every ALERT_CHECK_INTERVAL under
a lease, so one process at a time sends. It never raises for a mail server
that is down; the email stays due and the next check sends it.
"""
from __future__ import annotations

from datetime import datetime

from flask import Flask

from jobflow.alerts.notify import (
    CheckReport,
    EmailResult,
    apply_findings,
    due_email,
    notify_due,
    record_coverage,
    send_test_email,
)
from jobflow.alerts.rules import ALERTS_PAGE, PAGES, Finding, Snapshot, assess, evaluate, gather
from jobflow.timeutil import utcnow


def check_alerts(app: Flask, now: datetime | None = None) -> CheckReport:
    """Gather the figures, apply the rules, store the alerts, send the emails that are due."""
    now = now or utcnow()
    settings = app.config
    with app.app_context():  # flask-mail and the email templates need one; the worker thread has none
        snapshot = gather(settings, now)
        report = apply_findings(assess(snapshot, settings), now, settings)
        record_coverage(snapshot, now)
        notify_due(app, now, report)
    return report


def list_alerts(status: str | None = None, limit: int = 50):
    """Alerts newest first, with their history, for the dashboard; ``status`` open or resolved."""
    from jobflow.models import Alert
    query = Alert.objects(status=status) if status else Alert.objects
    return list(query.order_by("-openedAt").limit(limit))


__all__ = ["ALERTS_PAGE", "PAGES", "CheckReport", "EmailResult", "Finding", "Snapshot", "assess", "check_alerts",
           "due_email", "evaluate", "gather", "list_alerts", "send_test_email"]
