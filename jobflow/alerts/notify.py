"""Alert state and emails: store what the rules found, decide which emails are due, send each in try/log.

``apply_findings`` opens, updates and resolves the stored alerts. ``due_email``
decides, with no side effects, which email an alert is owed. ``notify`` renders
and sends one email; a failure is logged in one line and recorded as
``notify_failed``, and the email stays due, so the next check retries it.
"""
from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass, field
from datetime import datetime

from flask import Flask, render_template
from flask_mail import Connection, Message
from mongoengine import NotUniqueError

from jobflow.alerts.rules import ALERTS_PAGE, COVERAGE_WINDOW, Finding, Snapshot
from jobflow.models import Alert, AlertState
from jobflow.models.alert import HISTORY_KEEP
from jobflow.timeutil import duration_text, ms

log = logging.getLogger("jobflow.alerts")

SUBJECT_PREFIX = "[JobFlow Similar]"
HEADLINES = {"opened": "Alert", "reminder": "Still open", "resolved": "Resolved"}


@dataclass
class CheckReport:
    """What one check did: alerts opened, resolved and still open; emails sent and not sent."""
    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    open: list[str] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)          # (alert key, email kind)
    failed: list[tuple[str, str, str]] = field(default_factory=list)   # (alert key, email kind, reason)


@dataclass(frozen=True)
class EmailResult:
    """Whether an email went out, and a one-line message saying so or why not."""
    ok: bool
    message: str


# ----- stored alerts ---------------------------------------------------------------------------------

def _entry(now: datetime, event: str, figures: dict | None = None, **extra) -> dict:
    entry = {"at": now, "event": event}
    if figures is not None:
        entry["figures"] = dict(figures)
    entry.update(extra)
    return entry


def _push(entry: dict) -> dict:
    return {"history": {"$each": [entry], "$slice": -HISTORY_KEEP}}


def apply_findings(findings: list[Finding], now: datetime, settings: dict) -> CheckReport:
    """Open alerts for new firing findings, refresh the open ones, resolve those no longer firing."""
    report = CheckReport()
    emails_on = bool(settings["ALERT_EMAIL_ENABLED"])
    coll = Alert._get_collection()
    open_alerts = {doc["key"]: doc for doc in coll.find({"status": "open"})}
    by_key = {f.key: f for f in findings}
    for finding in findings:
        current = open_alerts.get(finding.key)
        latest = {"title": finding.title, "summary": finding.summary, "severity": finding.severity,
                  "page": finding.page, "figures": dict(finding.figures), "checkedAt": now}
        if finding.firing and current is None:
            alert = Alert(key=finding.key, status="open", openedAt=now, notifications=0,
                          owed="opened" if emails_on else None,
                          history=[_entry(now, "opened", finding.figures)], **latest)
            try:
                alert.save(force_insert=True)
            except NotUniqueError:
                continue  # another process opened it a moment ago
            report.opened.append(finding.key)
            report.open.append(finding.key)
            log.warning("alert opened: %s: %s", finding.title, finding.summary)
        elif finding.firing:
            coll.update_one({"_id": current["_id"], "status": "open"}, {"$set": latest})
            report.open.append(finding.key)
        elif current is not None:
            _resolve(current, now, latest, emails_on)
            report.resolved.append(finding.key)
            log.info("alert resolved: %s: %s", finding.title, finding.summary)
    for key, current in open_alerts.items():
        if key not in by_key:  # a rule that no longer exists: its alerts cannot stay open
            _resolve(current, now, {"checkedAt": now}, emails_on)
            report.resolved.append(key)
    return report


def _resolve(current: dict, now: datetime, latest: dict, emails_on: bool) -> None:
    # Announce the end of an alert whose start was announced, or was due to be (the mail server
    # was down): one "resolved" email then says both. Nothing when alert emails are off.
    announced = current.get("lastNotifiedAt") is not None or current.get("owed") == "opened"
    update: dict = {"$set": {**latest, "status": "resolved", "resolvedAt": now},
                    "$push": _push(_entry(now, "resolved", latest.get("figures", {})))}
    if emails_on and announced:
        update["$set"]["owed"] = "resolved"
    else:
        update["$unset"] = {"owed": ""}
    Alert._get_collection().update_one({"_id": current["_id"], "status": "open"}, update)


def record_coverage(snapshot: Snapshot, now: datetime) -> None:
    """Keep this check's coverage beside those of the last COVERAGE_WINDOW, for the coverage rule."""
    coll = AlertState._get_collection()
    state = coll.find_one({"_id": "coverage"}) or {}
    since = now - COVERAGE_WINDOW
    samples = [s for s in state.get("samples") or () if isinstance(s.get("at"), datetime) and since <= s["at"] < now]
    if snapshot.coverage is not None:
        samples.append({"at": now, "coverage": round(snapshot.coverage, 6)})
    coll.update_one({"_id": "coverage"}, {"$set": {"samples": samples, "updatedAt": now}}, upsert=True)


# ----- deciding -----------------------------------------------------------------------------------------

def due_email(alert: dict, now: datetime, settings: dict) -> str | None:
    """The email an alert is owed now: opened, reminder, resolved, or None. No side effects."""
    if not settings["ALERT_EMAIL_ENABLED"]:
        return None
    owed = alert.get("owed")
    if owed:
        return owed
    if alert.get("status") != "open":
        return None
    last = alert.get("lastNotifiedAt")
    if last is None:
        return "opened"  # alert emails were turned on while it was open
    if now - last >= ms(settings["ALERT_REMINDER_INTERVAL"]):
        return "reminder"
    return None


# ----- sending ----------------------------------------------------------------------------------------------

class _TimedConnection(Connection):
    """flask-mail's connection with a timeout, so a mail server that hangs cannot hold the check forever."""

    def __init__(self, state, timeout: float):
        super().__init__(state)
        self.timeout = timeout

    def configure_host(self):
        factory = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = factory(self.mail.server, self.mail.port, timeout=self.timeout)
        try:
            if self.mail.use_tls:
                host.starttls()
            if self.mail.username and self.mail.password:
                host.login(self.mail.username, self.mail.password)
        except BaseException:
            host.close()
            raise
        return host


def _one_line(exc: BaseException, settings: dict) -> str:
    """The error as one short line, without the SMTP password."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    password = settings.get("MAIL_PASSWORD")
    return text.replace(password, "***") if password else text


def send_email(app: Flask, recipients: list[str], subject: str, text: str, html: str) -> None:
    """Send one email through flask-mail with the MAIL_* settings; raises on failure. Needs an app context."""
    settings = app.config
    if not settings.get("MAIL_SERVER"):
        raise RuntimeError("MAIL_SERVER (or EMAIL_HOST) is not set")
    if not recipients:
        raise RuntimeError("no recipients (ALERT_EMAIL_TO is empty)")
    message = Message(subject=subject, recipients=list(recipients), body=text, html=html,
                      sender=settings.get("ALERT_EMAIL_FROM") or settings.get("MAIL_DEFAULT_SENDER"))
    with _TimedConnection(app.extensions["mail"], settings["MAIL_TIMEOUT"] / 1000.0) as connection:
        connection.send(message)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def render_alert_email(alert: dict, kind: str, now: datetime, settings: dict) -> tuple[str, str, str]:
    """Subject, text body and HTML body of an alert email. Needs an app context."""
    base = settings["PUBLIC_BASE_URL"].rstrip("/")
    opened, resolved = alert.get("openedAt"), alert.get("resolvedAt")
    context = {
        "alert": alert, "kind": kind, "headline": HEADLINES[kind], "title": alert.get("title", alert.get("key")),
        "summary": alert.get("summary", ""), "figures": alert.get("figures") or {},
        "severity": alert.get("severity", "warning"),
        "link": base + (alert.get("page") or ALERTS_PAGE), "alerts_link": base + ALERTS_PAGE,
        "opened_at": _when(opened), "resolved_at": _when(resolved),
        "open_for": duration_text((resolved or now) - opened) if opened else "",
        "reminder_every": duration_text(ms(settings["ALERT_REMINDER_INTERVAL"])),
    }
    subject = f"{SUBJECT_PREFIX} {HEADLINES[kind]}: {context['title']}"
    if kind != "resolved":
        subject += f" - {context['summary']}"
    return subject[:200], render_template("email/alert.txt", **context), render_template("email/alert.html", **context)


def notify(app: Flask, alert: dict, kind: str, now: datetime) -> tuple[bool, str | None]:
    """Send one alert email and record it: (True, None) sent, (False, reason) not sent, (False, None) not ours.

    The email is claimed first (``lastNotifiedAt`` and ``owed`` compared and set in one
    update), so two processes that both think it is due never both send it. On
    failure the claim is undone, one line is logged and ``notify_failed`` recorded:
    the email stays due and the next check retries it.
    """
    settings = app.config
    coll = Alert._get_collection()
    previous, owed = alert.get("lastNotifiedAt"), alert.get("owed")
    claimed = coll.update_one({"_id": alert["_id"], "lastNotifiedAt": previous, "owed": owed},
                              {"$set": {"lastNotifiedAt": now}, "$unset": {"owed": ""}})
    if claimed.modified_count != 1:
        return False, None
    try:
        subject, text, html = render_alert_email(alert, kind, now, settings)
        send_email(app, settings["ALERT_EMAIL_TO"], subject, text, html)
    except Exception as exc:  # one email failing never stops the check or the worker
        reason = _one_line(exc, settings)
        log.warning("alert %s: %s email not sent, will retry at the next check: %s", alert.get("key"), kind, reason)
        undo: dict = {"$set": {"lastNotifiedAt": previous}} if previous else {"$unset": {"lastNotifiedAt": ""}}
        if owed:
            undo.setdefault("$set", {})["owed"] = owed
        history = alert.get("history") or []
        last = history[-1] if history else {}
        if last.get("event") == "notify_failed" and last.get("email") == kind:
            # The same email failing again: count it on the same entry rather than add one a minute.
            i = len(history) - 1
            undo.setdefault("$set", {}).update({f"history.{i}.lastAt": now, f"history.{i}.error": reason})
            undo["$inc"] = {f"history.{i}.attempts": 1}
        else:
            undo["$push"] = _push(_entry(now, "notify_failed", email=kind, error=reason, attempts=1, lastAt=now))
        coll.update_one({"_id": alert["_id"], "lastNotifiedAt": now}, undo)
        return False, reason
    event = "reminder" if kind == "reminder" else "emailed"
    entry = _entry(now, event, alert.get("figures") or {}, **({} if kind == "reminder" else {"email": kind}))
    coll.update_one({"_id": alert["_id"]}, {"$inc": {"notifications": 1}, "$push": _push(entry)})
    log.info("alert %s: %s email sent to %d recipients", alert.get("key"), kind, len(settings["ALERT_EMAIL_TO"]))
    return True, None


def notify_due(app: Flask, now: datetime, report: CheckReport) -> None:
    """Send every email that is due, each on its own: one failing never stops the others."""
    settings = app.config
    coll = Alert._get_collection()
    if not settings["ALERT_EMAIL_ENABLED"]:
        # Emails owed from when they were on are not sent days later when they are turned back on.
        coll.update_many({"owed": {"$exists": True}}, {"$unset": {"owed": ""}})
        return
    candidates = list(coll.find({"status": "open"})) + list(coll.find({"status": "resolved", "owed": "resolved"}))
    for alert in candidates:
        kind = due_email(alert, now, settings)
        if kind is None:
            continue
        sent, reason = notify(app, alert, kind, now)
        if sent:
            report.sent.append((alert["key"], kind))
        elif reason is not None:
            report.failed.append((alert["key"], kind, reason))


def send_test_email(app: Flask, to: str | list[str] | None = None) -> EmailResult:
    """Send a test email with the MAIL_* settings (even when alert emails are off); ok or a one-line reason."""
    settings = app.config
    recipients = [to] if isinstance(to, str) else list(to or settings["ALERT_EMAIL_TO"])
    where = f"{settings.get('MAIL_SERVER') or '(no server)'}:{settings.get('MAIL_PORT')}"
    with app.app_context():
        try:
            context = {"server": where, "sender": settings.get("ALERT_EMAIL_FROM"),
                       "alerts_link": settings["PUBLIC_BASE_URL"].rstrip("/") + ALERTS_PAGE,
                       "emails_on": bool(settings["ALERT_EMAIL_ENABLED"])}
            send_email(app, recipients, f"{SUBJECT_PREFIX} Test email",
                       render_template("email/test.txt", **context), render_template("email/test.html", **context))
        except Exception as exc:
            reason = _one_line(exc, settings)
            log.warning("test email to %s via %s not sent: %s", ", ".join(recipients), where, reason)
            return EmailResult(False, f"not sent to {', '.join(recipients) or '(nobody)'} via {where}: {reason}")
    note = "" if settings["ALERT_EMAIL_ENABLED"] else " (alert emails are off: ALERT_EMAIL_ENABLED=false)"
    return EmailResult(True, f"sent to {', '.join(recipients)} via {where}{note}")


__all__ = ["CheckReport", "EmailResult", "apply_findings", "due_email", "notify", "notify_due", "record_coverage",
           "render_alert_email", "send_email", "send_test_email"]
