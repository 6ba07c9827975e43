"""Is a MongoDB server there, and which loopback port is free: what starting the embedded one needs."""
from __future__ import annotations

import socket
from urllib.parse import urlparse

from pymongo import MongoClient
from pymongo.errors import PyMongoError


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or started; the message says why."""


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(uri: str, timeout_ms: int = 1500) -> bool:
    """True when a MongoDB server answers at ``uri``."""
    try:
        client = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    except (PyMongoError, ValueError):
        return False
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def port_free(port: int) -> bool:
    """True when ``port`` can be bound on loopback now."""
    with socket.socket() as sock:
        # As a server binds it: a port whose last connections are in TIME_WAIT is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def where(uri: str) -> str:
    """The host(s) and port(s) of a MongoDB URI, never its user or password."""
    netloc = urlparse(uri).netloc
    return netloc.rsplit("@", 1)[-1] or "(no host)"
