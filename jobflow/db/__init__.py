"""Database connection: mongoengine on MongoDB, or the embedded SecantusDB server.

With MONGODB_URI unset, the embedded server (``jobflow.db.embedded``) runs as a process of its own under
``instance/secantus``, with a generated password, kept while any process of the product uses it and
stopped by the last (or by its own watchdog when the last one crashed); its folder is private. How:
RELIABILITY.md, "Design notes".
"""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import mongoengine

from jobflow.db.embedded import DEFAULT_DB_NAME, EmbeddedServer
from jobflow.db.files import make_private, private_dir
from jobflow.db.probe import DatabaseUnavailable, free_port, ping, port_free, where

__all__ = ["DEFAULT_DB_NAME", "SERVER_SELECTION_TIMEOUT_MS", "DatabaseUnavailable", "EmbeddedServer", "check_reachable",
           "connect", "database_name", "database_uri", "free_port", "get_db", "keep_embedded_running", "make_private",
           "ping", "port_free", "prepare_database", "private_dir", "where"]

log = logging.getLogger(__name__)

# How long a query waits for an unreachable database before it fails: a web request answers 503 within
# about this long (tests/faults/test_database_restart.py), and the worker's next poll tries again.
SERVER_SELECTION_TIMEOUT_MS = 2000


_embedded: EmbeddedServer | None = None


def check_reachable(uri: str, timeout_ms: int = 5000) -> None:
    """Raise DatabaseUnavailable, naming host and port (never a password), unless the database answers."""
    if not ping(uri, timeout_ms=timeout_ms):
        raise DatabaseUnavailable(f"the database at {where(uri)} did not answer within {timeout_ms / 1000:.0f}s "
                                  f"(is it running, and is MONGODB_URI right?)")


def database_uri(settings: dict, instance_path: str) -> str:
    """The configured MONGODB_URI, or the URI of the embedded server (started if needed)."""
    global _embedded
    if settings.get("MONGODB_URI"):
        return settings["MONGODB_URI"]
    data_dir = Path(instance_path) / "secantus"
    if _embedded is None or _embedded.data_dir != data_dir:
        _embedded = EmbeddedServer(data_dir)
    return _embedded.ensure()


def prepare_database(settings: dict, instance_path: str) -> str:
    """Reach the configured database, or start (or reuse) the embedded one; its URI. Raises DatabaseUnavailable."""
    uri = database_uri(settings, instance_path)
    if settings.get("MONGODB_URI"):
        check_reachable(uri)   # the embedded server was just pinged by database_uri (started or reused)
    return uri


def keep_embedded_running() -> bool:
    """In a process that uses the embedded database, start it again if it is gone; True if started."""
    return _embedded.keep_running() if _embedded is not None else False


def database_name(uri: str) -> str:
    """The database named in the URI's path, or the default."""
    name = urlparse(uri).path.lstrip("/").split("?")[0]
    return name or DEFAULT_DB_NAME


def connect(uri: str) -> None:
    """Register the mongoengine connection; the client connects on first use (safe across fork)."""
    mongoengine.disconnect()
    mongoengine.connect(host=uri, db=database_name(uri), connect=False, tz_aware=True,
                        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS, uuidRepresentation="standard")


def get_db():
    """The pymongo Database behind mongoengine's default connection."""
    return mongoengine.get_db()
