"""Database connection: mongoengine on MongoDB, or the embedded SecantusDB server.

With MONGODB_URI unset, a SecantusDB server runs as a child process with its
data under ``instance/secantus``. A process that finds one already serving
that folder reuses it; the process that started it stops it on exit. A file
lock makes "look, then start" atomic, so two starts never open one folder
twice.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mongoengine
from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

DEFAULT_DB_NAME = "jobflow"
# How long a query waits for an unreachable database before it fails: a web request answers 503 within
# about this long (tests/faults/test_database_restart.py), and the worker's next poll tries again.
SERVER_SELECTION_TIMEOUT_MS = 2000


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or started; the message says why."""


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(uri: str, timeout_ms: int = 1500) -> bool:
    """True when a MongoDB server answers at ``uri``."""
    client = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


class EmbeddedServer:
    """A SecantusDB server serving one data folder, started or reused."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.state_file = self.data_dir.parent / "secantus.json"
        self.lock_file = self.data_dir.parent / "secantus.lock"
        self.log_file = self.data_dir.parent / "secantus.log"
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{DEFAULT_DB_NAME}"

    @contextmanager
    def _locked(self):
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _running_port(self) -> int | None:
        try:
            state = json.loads(self.state_file.read_text())
            pid, port = int(state["pid"]), int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return port if ping(f"mongodb://127.0.0.1:{port}") else None

    def ensure(self, timeout: float = 30.0) -> str:
        """Reuse the server serving the folder, or start one; return its URI."""
        with self._locked():
            port = self._running_port()
            if port is not None:
                self.port = port
                log.info("using the embedded database already serving %s (port %s)", self.data_dir, port)
                return self.uri
            self._start(timeout)
            return self.uri

    def _start(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        command = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                   "--storage-path", str(self.data_dir), "--log-level", "WARNING"]
        with open(self.log_file, "ab") as out:
            # A new session: Ctrl+C in the terminal reaches us, and we stop the server in order.
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DatabaseUnavailable(
                    f"the embedded database exited at start (code {self.process.returncode}); see {self.log_file}")
            if ping(f"mongodb://127.0.0.1:{self.port}", timeout_ms=500):
                self.state_file.write_text(json.dumps({"pid": self.process.pid, "port": self.port}))
                atexit.register(self.stop)
                log.info("started the embedded database on port %s (data in %s)", self.port, self.data_dir)
                return
            time.sleep(0.1)
        self.stop()
        raise DatabaseUnavailable(f"the embedded database did not answer within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server if this process started it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        try:
            if json.loads(self.state_file.read_text()).get("pid") == process.pid:
                self.state_file.unlink()
        except (OSError, ValueError):
            pass


_embedded: EmbeddedServer | None = None


def database_uri(settings: dict, instance_path: str) -> str:
    """The configured MONGODB_URI, or the URI of the embedded server (started if needed)."""
    global _embedded
    if settings.get("MONGODB_URI"):
        return settings["MONGODB_URI"]
    data_dir = Path(instance_path) / "secantus"
    if _embedded is None or _embedded.data_dir != data_dir:
        _embedded = EmbeddedServer(data_dir)
    return _embedded.ensure()


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
