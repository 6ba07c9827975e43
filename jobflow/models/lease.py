"""A named lease, so singleton periodic work runs in one process at a time (collection ``leases``)."""
from datetime import timedelta

from mongoengine import DateTimeField, Document, StringField
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from jobflow.timeutil import utcnow


class Lease(Document):
    """Who holds a named lease, and until when."""
    meta = {"collection": "leases"}

    name = StringField(primary_key=True)
    owner = StringField()
    expiresAt = DateTimeField()

    @classmethod
    def acquire(cls, name: str, owner: str, ttl: timedelta) -> bool:
        """Take or renew the lease if it is free, expired or ours; True on success."""
        now = utcnow()
        try:
            doc = cls._get_collection().find_one_and_update(
                {"_id": name, "$or": [{"owner": owner}, {"expiresAt": {"$lt": now}}]},
                {"$set": {"owner": owner, "expiresAt": now + ttl}},
                upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            return False
        return doc is not None and doc.get("owner") == owner

    @classmethod
    def release(cls, name: str, owner: str) -> None:
        """Give the lease up if we hold it."""
        cls._get_collection().delete_one({"_id": name, "owner": owner})
