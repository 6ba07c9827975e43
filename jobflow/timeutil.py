"""Time in one place: aware UTC datetimes and millisecond settings."""
from datetime import datetime, timedelta, timezone


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, truncated to milliseconds as BSON stores it."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def ms(value: int) -> timedelta:
    """A timedelta from a millisecond setting."""
    return timedelta(milliseconds=value)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with a Z, or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
