"""Small formatters for the dashboard templates (``fmt`` in every admin template)."""
from __future__ import annotations

from datetime import datetime, timezone

from jobflow.timeutil import duration_text, utcnow

# ``fmt.duration_text`` in the templates is timeutil's, so pages and alert emails say a duration in the same words.
__all__ = ["ago", "clock", "duration_text", "megabytes", "money", "num", "percent", "utc"]


def num(value) -> str:
    """1,234 (or — for nothing)."""
    if not isinstance(value, (int, float)):
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"




def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """How long ago: 12 s ago, 4 min ago, 3 h ago, 2 d ago."""
    if not isinstance(when, datetime):
        return "never"
    seconds = max(((now or utcnow()) - _aware(when)).total_seconds(), 0)
    if seconds < 90:
        return f"{int(seconds)} s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def utc(when: datetime | None, seconds: bool = True) -> str:
    """2024-05-01 12:03:04 (UTC), or — ."""
    if not isinstance(when, datetime):
        return "—"
    return _aware(when).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def clock(when: datetime | None) -> str:
    """12:03 UTC."""
    return _aware(when).astimezone(timezone.utc).strftime("%H:%M") if isinstance(when, datetime) else "—"


def money(value: float | None) -> str:
    """$0.0123 for small amounts, $12.34 otherwise."""
    if value is None:
        return "—"
    if 0 < value < 1:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def megabytes(value: float | None) -> str:
    return "—" if not value else f"{value:,.0f} MB"
