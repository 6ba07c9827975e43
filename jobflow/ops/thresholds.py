"""The thresholds of the health report, the dashboard's banner and the alert rules, each decided here once.

Every reader (``/api/health/embeddings``, the overview's banner, the alert
rules, the admin API) calls these, so they never disagree about a figure.
"""
from __future__ import annotations


def queue_too_long(pending: int, settings: dict) -> bool:
    """More items pending than ALERT_THRESHOLD_QUEUE_SIZE."""
    return pending > settings["ALERT_THRESHOLD_QUEUE_SIZE"]


def too_many_failures(failures_last_hour: int, settings: dict) -> bool:
    """More queue items failed in the last hour than ALERT_THRESHOLD_FAILURES."""
    return failures_last_hour > settings["ALERT_THRESHOLD_FAILURES"]


def too_many_failed_items(failed_items: int, settings: dict) -> bool:
    """At least ALERT_THRESHOLD_FAILED_ITEMS failed items wait in the queue (the original health rule: failed < 50)."""
    return failed_items >= settings["ALERT_THRESHOLD_FAILED_ITEMS"]
