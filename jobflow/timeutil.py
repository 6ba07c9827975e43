"""Time in one place: aware UTC datetimes, millisecond settings, and durations as people read them."""
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


def duration_text(value: timedelta | float | None) -> str:
    """A short duration (a timedelta or seconds): 45 s, 7 min, 2 h 5 min, 3 d 4 h; "unknown" for None."""
    if value is None:
        return "unknown"
    seconds = int(round(max(value.total_seconds() if isinstance(value, timedelta) else value, 0)))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
