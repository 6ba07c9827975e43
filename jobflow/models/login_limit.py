"""Counts per client and time window, shared by every process and host: sign-in attempts (``loginattempts``)
and the admin API's writes and wrong tokens (``requestcounts``).

One document per client and window length: ``_id`` is ``"<window seconds>|<client>"``.
A window opens at a client's first attempt and lasts ``seconds``; every attempt in
it is one atomic ``$inc``, so every web process of every host counts into the same
number. The first attempt after the window's end opens the next one. Documents
expire through a TTL index a little after their window ends.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mongoengine import DateTimeField, Document, IntField, StringField
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

# Kept a little past the window's end (the TTL monitor runs about once a minute anyway).
_KEEP_AFTER_WINDOW = timedelta(minutes=5)


def _aware(value: datetime) -> datetime:
    """``value`` as aware UTC (a client opened without tz_aware returns naive UTC datetimes)."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class WindowCount(Document):
    """How many times one client did something in its current window (a collection per kind of thing)."""
    meta = {"abstract": True}

    id = StringField(primary_key=True)
    count = IntField(default=0)
    windowEnd = DateTimeField()
    expiresAt = DateTimeField()

    @staticmethod
    def _key(client: str, seconds: int) -> str:
        return f"{seconds}|{client}"

    @classmethod
    def hit(cls, client: str, seconds: int, now: datetime) -> tuple[int, datetime]:
        """Count one attempt of ``client`` in its window of ``seconds``: the window's count after it, and its end."""
        collection = cls._get_collection()
        key = cls._key(client, seconds)
        end = now + timedelta(seconds=seconds)
        fresh = {"count": 1, "windowEnd": end, "expiresAt": end + _KEEP_AFTER_WINDOW}
        for _ in range(5):
            # The usual case: a window is open; count into it.
            doc = collection.find_one_and_update({"_id": key, "windowEnd": {"$gt": now}}, {"$inc": {"count": 1}},
                                                 return_document=ReturnDocument.AFTER)
            if doc is not None:
                return int(doc["count"]), _aware(doc["windowEnd"])
            # The window ended: open the next one (only one process wins; the others count into it).
            if collection.find_one_and_update({"_id": key, "windowEnd": {"$lte": now}}, {"$set": fresh}) is not None:
                return 1, end
            # The client's first attempt (or the document expired).
            try:
                collection.insert_one({"_id": key, **fresh})
                return 1, end
            except DuplicateKeyError:
                continue  # another process inserted it first; count into its window
        raise RuntimeError(f"could not count in {collection.name} for {key}")

    @classmethod
    def give_back(cls, client: str, seconds: int, window_end: datetime) -> None:
        """Take one attempt back out of the window that ends at ``window_end`` (if it is still the current one)."""
        cls._get_collection().update_one(
            {"_id": cls._key(client, seconds), "windowEnd": window_end, "count": {"$gt": 0}}, {"$inc": {"count": -1}})

    @classmethod
    def attempts(cls, client: str, seconds: int, now: datetime) -> int:
        """The attempts of ``client`` in its open window of ``seconds`` (0 when none is open)."""
        return cls.open_windows(client, (seconds,), now).get(seconds, (0, now))[0]

    @classmethod
    def open_windows(cls, client: str, windows, now: datetime) -> dict[int, tuple[int, datetime]]:
        """Window seconds -> (count, end) of each of ``client``'s open windows among ``windows``, in one read."""
        keys = {cls._key(client, seconds): seconds for seconds in windows}
        docs = cls._get_collection().find({"_id": {"$in": list(keys)}, "windowEnd": {"$gt": now}})
        return {keys[doc["_id"]]: (int(doc["count"]), _aware(doc["windowEnd"])) for doc in docs}


_EXPIRE = {"fields": ["expiresAt"], "name": "expire", "expireAfterSeconds": 0}


class LoginAttempts(WindowCount):
    """How many sign-in attempts one client made in its current window."""
    meta = {"collection": "loginattempts", "indexes": [dict(_EXPIRE)]}


class RequestCounts(WindowCount):
    """How many admin API writes, or requests with a wrong API token, one client made in its current window
    (the client is prefixed by what is counted: ``write|203.0.113.9``)."""
    meta = {"collection": "requestcounts", "indexes": [dict(_EXPIRE)]}
