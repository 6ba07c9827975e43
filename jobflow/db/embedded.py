"""The embedded database: a SecantusDB server of the product's own, started or reused, stopped by its last user.

Its data live under ``instance/secantus``. Every process of the product that uses it registers with a
shared lock on ``secantus.users``; the server runs while any of them does: the last one to exit stops it,
and should that one crash, the server's own watchdog does within seconds (``jobflow.db.serve``). Its port
is kept in ``secantus.json`` and used again at the next start, so clients reconnect to the same address.
A file lock makes "look, then start (or stop)" atomic.

The server requires a password (SCRAM-SHA-256). The product's user and its generated password are kept in
``secantus.auth`` (mode 600); the user is created by starting the server once without authentication, on
a port of its own no client knows, which is also how a folder of an older, open version is upgraded.
How and why: RELIABILITY.md, "Design notes".
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote_plus

from pymongo import MongoClient

from jobflow.db.files import nobody_uses, open_private, private_dir, tighten, write_private
from jobflow.db.probe import DatabaseUnavailable, free_port, ping, port_free

log = logging.getLogger("jobflow.db")

DEFAULT_DB_NAME = "jobflow"
USER = "jobflow"


def _pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie, exited but not yet reaped by its parent, does not)."""
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _end(process: subprocess.Popen, timeout: float) -> None:
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmbeddedServer:
    """A SecantusDB server serving one data folder: started or reused, stopped by its last user."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.instance = self.data_dir.parent
        self.state_file = self.instance / "secantus.json"
        self.lock_file = self.instance / "secantus.lock"
        self.users_file = self.instance / "secantus.users"
        self.log_file = self.instance / "secantus.log"
        self.auth_file = self.instance / "secantus.auth"
        self.process: subprocess.Popen | None = None   # set when this process started the server
        self.port: int | None = None
        self._user: tuple[int, object] | None = None   # (pid, open file holding our shared lock)
        self._auth: tuple[str, str] | None = None      # (user, password), once read or generated

    @property
    def uri(self) -> str:
        return self.uri_for(DEFAULT_DB_NAME)

    def uri_for(self, name: str) -> str:
        """The URI of database ``name`` on this server, with the product's credentials."""
        user, password = self._credentials()
        return f"mongodb://{quote_plus(user)}:{quote_plus(password)}@127.0.0.1:{self.port}/{name}?authSource=admin"

    # ----- credentials ----------------------------------------------------------------------------
    def _credentials(self) -> tuple[str, str]:
        """The product's user and password, generated (into ``secantus.auth``, mode 600) the first time."""
        if self._auth is None:
            try:
                saved = json.loads(self.auth_file.read_text())
                if isinstance(saved, dict) and saved.get("user") and saved.get("password"):
                    tighten(self.auth_file)
                    self._auth = str(saved["user"]), str(saved["password"])
                    return self._auth
            except (OSError, ValueError):
                pass
            private_dir(self.instance)
            self._auth = USER, secrets.token_urlsafe(32)
            write_private(self.auth_file, json.dumps({"user": self._auth[0], "password": self._auth[1]}))
        return self._auth

    def _provision(self, timeout: float) -> None:
        """Give the data folder the product's user with the saved password: start the server once without
        authentication on a port no client knows, create (or reset) the user, stop it."""
        user, password = self._credentials()
        port = free_port()
        process = self._spawn(port, auth=False)
        try:
            self._wait_for(process, port, timeout)
            client = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)
            try:
                known = client.admin.command("usersInfo", user)["users"]
                client.admin.command("updateUser" if known else "createUser", user, pwd=password,
                                     roles=[{"role": "root", "db": "admin"}])
            finally:
                client.close()
        finally:
            _end(process, 15.0)
        log.info("the embedded database's user %s %s", user, "has a new password" if known else "was created")

    # ----- state ----------------------------------------------------------------------------------
    def _make_private(self) -> None:
        """The instance folder and the data folder mode 700, the files beside them 600 (older versions' too)."""
        private_dir(self.instance)
        if self.data_dir.is_dir():
            private_dir(self.data_dir)
        for path in (self.state_file, self.users_file, self.log_file, self.auth_file):
            tighten(path)

    @contextmanager
    def _locked(self):
        self._make_private()
        with os.fdopen(open_private(self.lock_file, os.O_WRONLY), "w") as handle:
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
        replaced: two servers on one folder would corrupt it. One an older version started without a
        password is stopped when nothing uses it; else it gets the product's user now and a password at
        its next start.
        """
        state = self._state()
        try:
            pid, port = int(state["pid"]), int(state["port"])
        except (KeyError, TypeError, ValueError):
            return None
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if ping(f"mongodb://127.0.0.1:{port}"):
                return port if state.get("auth") else self._open_server(pid, port)
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(f"the embedded database (pid {pid}, port {port}) runs but does not answer; "
                                          f"see {self.log_file}")
        return None

    def _open_server(self, pid: int, port: int) -> int | None:
        if nobody_uses(self.users_file):
            log.warning("the embedded database ran without a password (an older version started it): restarting it")
            self._stop_server(15.0)
            return None
        user, password = self._credentials()
        client = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)
        try:
            if not client.admin.command("usersInfo", user)["users"]:
                client.admin.command("createUser", user, pwd=password, roles=[{"role": "root", "db": "admin"}])
        finally:
            client.close()
        log.warning("the embedded database runs without a password (an older version started it, pid %s): it "
                    "requires one once every process of the product has stopped and it starts again", pid)
        return port

    # ----- users ----------------------------------------------------------------------------------
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
        if self.port is not None and ping(f"mongodb://127.0.0.1:{self.port}", timeout_ms=1000):
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
        handle = os.fdopen(open_private(self.users_file, os.O_RDWR | os.O_APPEND), "a+")
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

    # ----- the server process ---------------------------------------------------------------------
    def _spawn(self, port: int, auth: bool) -> subprocess.Popen:
        """The server on ``port``: with a password and its watchdog, or (to create the user) without either."""
        private_dir(self.data_dir)
        args = ["--host", "127.0.0.1", "--port", str(port), "--storage-path", str(self.data_dir), "--log-level", "WARNING"]
        command = [sys.executable, "-m", "jobflow.db.serve", str(self.instance), *args, "--auth"] if auth \
            else [sys.executable, "-m", "secantus", *args]
        with os.fdopen(open_private(self.log_file, os.O_WRONLY | os.O_APPEND), "ab") as out:
            # A session of its own: it outlives this process while other processes use it, and Ctrl+C in the
            # terminal reaches only us, so the last user stops it in order. Umask 077: its files are its user's.
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, umask=0o077)

    def _wait_for(self, process: subprocess.Popen, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DatabaseUnavailable(
                    f"the embedded database exited at start (code {process.returncode}); see {self.log_file}")
            if ping(f"mongodb://127.0.0.1:{port}", timeout_ms=500):
                return
            time.sleep(0.1)
        _end(process, 5.0)
        raise DatabaseUnavailable(f"the embedded database did not answer within {timeout:.0f}s; see {self.log_file}")

    def _start(self, timeout: float) -> None:
        state = self._state()
        remembered = state.get("port")
        if isinstance(remembered, int) and port_free(remembered):
            self.port = remembered
        else:
            self.port = free_port()
            if remembered:
                log.warning("the embedded database's port %s is taken; using %s", remembered, self.port)
        if not state.get("auth"):
            self._provision(timeout)        # a new folder, or one an older version ran without a password
        for attempt in (1, 2):
            self.process = self._spawn(self.port, auth=True)
            self._wait_for(self.process, self.port, timeout)
            if attempt == 2 or ping(self.uri, timeout_ms=5000):
                break
            # The saved password does not open this folder (a data folder copied in, secantus.auth removed).
            log.warning("the embedded database refused the saved password: setting it again")
            _end(self.process, 15.0)
            self._provision(timeout)
        write_private(self.state_file, json.dumps({"pid": self.process.pid, "port": self.port, "auth": True}))
        log.info("started the embedded database on port %s (data in %s)", self.port, self.data_dir)

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
        port = state.get("port") or self.port
        if port:
            write_private(self.state_file, json.dumps({"port": port, **({"auth": True} if state.get("auth") else {})}))

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server now, whoever else uses it (tests and ``rollback``-style maintenance)."""
        self._user = None
        with self._locked():
            self._stop_server(timeout)
