"""Database connection: mongoengine on MongoDB, or the embedded SecantusDB server.

With MONGODB_URI unset, the embedded server runs as a process of its own under
``instance/secantus``, kept while any process of the product uses it and
stopped by the last; its folder is private. How: RELIABILITY.md, "Design notes".
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


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed; make it mode 700 (only this user may list or enter it)."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            log.warning("cannot make %s private (mode 700): %s", path, exc.strerror)
    return path


def make_private(path: Path) -> bool:
    """Make an existing file mode 600 if group or others may read or write it; True if it had to be changed.

    Under an exclusive lock on the file, so of processes starting together exactly one changes it (and says so).
    Raises OSError when the mode cannot be changed.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_mode & 0o077 == 0:
            return False
        os.fchmod(fd, 0o600)
        return True
    finally:
        os.close(fd)        # releases the lock


def _tighten(path: Path) -> None:
    """An existing file that group or others may use: mode 600 (a warning if that fails)."""
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private (mode 600): %s", path, exc.strerror)


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` creating the file mode 600; an existing file is made 600 too (one of an older version)."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError as exc:
        log.warning("cannot make %s private (mode 600): %s", path, exc.strerror)
    return fd


def _write_private(path: Path, text: str) -> None:
    with os.fdopen(_open_private(path, os.O_WRONLY | os.O_TRUNC), "w") as handle:
        handle.write(text)


def _pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie, exited but not yet reaped by its parent, does not)."""
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class EmbeddedServer:
    """A SecantusDB server serving one data folder: started or reused, stopped by its last user."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.state_file = self.data_dir.parent / "secantus.json"
        self.lock_file = self.data_dir.parent / "secantus.lock"
        self.users_file = self.data_dir.parent / "secantus.users"
        self.log_file = self.data_dir.parent / "secantus.log"
        self.process: subprocess.Popen | None = None   # set when this process started the server
        self.port: int | None = None
        self._user: tuple[int, object] | None = None   # (pid, open file holding our shared lock)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{DEFAULT_DB_NAME}"

    def _make_private(self) -> None:
        """The instance folder and the data folder mode 700, the files beside them 600 (older versions' too)."""
        private_dir(self.data_dir.parent)
        if self.data_dir.is_dir():
            private_dir(self.data_dir)
        for path in (self.state_file, self.users_file, self.log_file):
            _tighten(path)

    @contextmanager
    def _locked(self):
        self._make_private()
        with os.fdopen(_open_private(self.lock_file, os.O_WRONLY), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _state(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def _running_port(self, timeout: float = 30.0) -> int | None:
        """The port of the server serving the folder, or None when none runs.

        A server whose process lives but does not answer (busy, still starting) is waited for, never
        replaced: two servers on one folder would corrupt it.
        """
        state = self._state()
        try:
            pid, port = int(state["pid"]), int(state["port"])
        except (KeyError, TypeError, ValueError):
            return None
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if ping(f"mongodb://127.0.0.1:{port}"):
                return port
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(f"the embedded database (pid {pid}, port {port}) runs but does not answer; "
                                          f"see {self.log_file}")
        return None

    def ensure(self, timeout: float = 30.0) -> str:
        """Reuse the server serving the folder, or start one; register this process as a user; return its URI."""
        with self._locked():
            port = self._running_port(timeout)
            if port is not None:
                if port != self.port:
                    log.info("using the embedded database already serving %s (port %s)", self.data_dir, port)
                self.port = port
            else:
                self._start(timeout)
            self._register()
            return self.uri

    def keep_running(self) -> bool:
        """Start the server again if it is gone (crashed, killed with another process's service); True if started.

        It comes back on the same port, so every client reconnects by itself.
        """
        if self.port is not None and ping(self.uri, timeout_ms=1000):
            return False
        with self._locked():
            if self._running_port() is not None:
                return False
            log.warning("the embedded database was not running: starting it again on port %s", self.port)
            self._start(30.0)
            self._register()
            return True

    def _register(self) -> None:
        """Hold a shared lock on the users file for as long as this process lives (a crash releases it)."""
        if self._user is not None and self._user[0] == os.getpid():
            return
        # A forked child (a gunicorn worker) registers on its own: its parent's registration stays the parent's.
        handle = os.fdopen(_open_private(self.users_file, os.O_RDWR | os.O_APPEND), "a+")
        fcntl.flock(handle, fcntl.LOCK_SH)
        self._user = (os.getpid(), handle)
        atexit.register(self.release)

    def release(self, timeout: float = 15.0) -> bool:
        """This process stops using the server; if it was the last user, stop the server. True if stopped."""
        user, self._user = self._user, None
        if user is None or user[0] != os.getpid():
            return False
        handle = user[1]
        with self._locked():
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()            # others still use it: it keeps running
                return False
            handle.close()
            self._stop_server(timeout)
            return True

    def _start(self, timeout: float) -> None:
        private_dir(self.data_dir)
        remembered = self._state().get("port")
        if isinstance(remembered, int) and port_free(remembered):
            self.port = remembered
        else:
            self.port = free_port()
            if remembered:
                log.warning("the embedded database's port %s is taken; using %s", remembered, self.port)
        command = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                   "--storage-path", str(self.data_dir), "--log-level", "WARNING"]
        with os.fdopen(_open_private(self.log_file, os.O_WRONLY | os.O_APPEND), "ab") as out:
            # A session of its own: it outlives this process while other processes use it, and Ctrl+C in the
            # terminal reaches only us, so the last user stops it in order. Umask 077: its files are its user's.
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, umask=0o077)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DatabaseUnavailable(
                    f"the embedded database exited at start (code {self.process.returncode}); see {self.log_file}")
            if ping(f"mongodb://127.0.0.1:{self.port}", timeout_ms=500):
                _write_private(self.state_file, json.dumps({"pid": self.process.pid, "port": self.port}))
                log.info("started the embedded database on port %s (data in %s)", self.port, self.data_dir)
                return
            time.sleep(0.1)
        self._stop_server(5.0)
        raise DatabaseUnavailable(f"the embedded database did not answer within {timeout:.0f}s; see {self.log_file}")

    def _stop_server(self, timeout: float) -> None:
        """Stop the server serving the folder (started by this process or another); keep its port for next time."""
        state = self._state()
        process, self.process = self.process, None
        pid = process.pid if process is not None else state.get("pid")
        if isinstance(pid, int) and _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            if process is not None:      # our child: wait for it (no zombie)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            else:
                deadline = time.monotonic() + timeout
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            log.info("stopped the embedded database (port %s)", state.get("port", self.port))
        if state.get("port") or self.port:
            _write_private(self.state_file, json.dumps({"port": state.get("port") or self.port}))

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server now, whoever else uses it (tests and ``rollback``-style maintenance)."""
        self._user = None
        with self._locked():
            self._stop_server(timeout)


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
