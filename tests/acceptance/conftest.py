"""Harness of the acceptance suite: a copy of the product with its own ``.env``, its commands as processes,
an SMTP inbox and a database per module (the helpers they use are in ``tests/support``).

Everything here looks at the product from outside: files it is given, commands an operator types, HTTP,
the database through pymongo and what the processes print. Settings go into ``.env`` in the copy's
folder; the environment of a command carries only PATH-like things (and, where a test says so, what
systemd or a shell would add).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.support import BIN, ROOT
from tests.support.database import fresh_database
from tests.support.mail import Inbox
from tests.support.processes import Finished, Process

# The product as the README lays it out, without what a checkout adds (.venv, .git, tests, instance).
COPIED = ("app.py", "wsgi.py", "gunicorn.conf.py", "jobflow", "templates", "static", "deploy", "Procfile",
          ".env.example", "requirements.txt", "requirements-dev.txt")
PYTHON = BIN / "python"
APP = [str(PYTHON), "app.py"]
FLASK = [str(BIN / "flask"), "--app", "app"]
GUNICORN = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"]

README = (ROOT / "README.md").read_text()
# Every setting the README documents, plus the names gunicorn.conf.py and the aliases read: none of them
# may reach a command from the test's own environment.
SETTING_NAMES = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", README, re.M)
NOT_INHERITED = set(SETTING_NAMES) | {"EMAIL_HOST", "EMAIL_PORT", "EMAIL_USER", "EMAIL_PASS", "HOST",
                                      "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT",
                                      "GUNICORN_GRACEFUL_TIMEOUT", "JOBFLOW_INSTANCE_PATH", "DRY_RUN", "FLASK_APP",
                                      "FLASK_DEBUG", "PYTHONPATH", "ALERT_CHECK_INTERVAL"}


# ----- processes --------------------------------------------------------------------------------------------

class Product:
    """A copy of the product in its own folder, with a ``.env`` and the processes started there."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, self.folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif source.exists():
                shutil.copy2(source, self.folder / name)
        self.logs = self.folder.parent / f"{self.folder.name}-logs"
        self.logs.mkdir(exist_ok=True)
        self.running: list[Process] = []
        self.finished: list[Finished] = []
        self.settings: dict[str, str] = {}

    # --- settings
    def write_env(self, settings: dict | None = None, text: str = "") -> Path:
        """Write ``.env``: ``text`` as is, then one NAME=value line per setting."""
        self.settings = {k: str(v) for k, v in (settings or {}).items()}
        lines = [text.rstrip("\n")] if text else []
        lines += [f"{name}={value}" for name, value in self.settings.items()]
        path = self.folder / ".env"
        path.write_text("\n".join(lines) + "\n")
        return path

    def update_env(self, **changes) -> None:
        """Change some settings in ``.env`` (an operator editing the file)."""
        self.write_env({**self.settings, **{k: str(v) for k, v in changes.items()}})

    def environment(self, extra: dict | None = None) -> dict:
        """The test's environment without any of the product's settings, the venv first on PATH."""
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED and not k.startswith("JOBFLOW_")}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    # --- commands
    def start(self, name: str, args: list[str], extra_env: dict | None = None) -> Process:
        proc = Process(name, args, self.environment(extra_env), self.logs / f"{len(self.running):02d}-{name}.log",
                       cwd=self.folder)
        self.running.append(proc)
        return proc

    def run(self, args: list[str], timeout: float = 90, extra_env: dict | None = None,
            name: str | None = None) -> Finished:
        """Run a command to its end (stdin not a terminal); its exit code and output."""
        return self.run_all([(name or " ".join(args[1:4]), args, extra_env)], timeout)[0]

    def run_all(self, commands: list[tuple[str, list[str], dict | None]], timeout: float = 90) -> list[Finished]:
        """Run commands side by side (each in its own process) until each ends; killed after ``timeout``."""
        procs = [self.start(name, args, extra) for name, args, extra in commands]
        results = []
        for proc in procs:
            remaining = max(timeout - (time.monotonic() - proc.started), 0.1)
            try:
                code = proc.process.wait(remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"{proc.name} did not end within {timeout}s:\n{proc.tail()}")
            done = Finished(proc.name, code, proc.output(), time.monotonic() - proc.started)
            self.finished.append(done)
            results.append(done)
        return results

    def stop_all(self) -> None:
        """Teardown: SIGTERM what still runs, then SIGKILL; and the embedded database if one is left."""
        for proc in reversed(self.running):
            if proc.alive():
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.running:
            try:
                proc.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            proc.kill()
        pid = self.database_pid()
        if pid and psutil.pid_exists(pid):
            try:
                child = psutil.Process(pid)
                if "secantus" in " ".join(child.cmdline()) and str(self.folder) in " ".join(child.cmdline()):
                    child.kill()
            except psutil.Error:
                pass

    # --- the embedded database's state file
    def database_state(self) -> dict:
        """``instance/secantus.json`` of the embedded database ({} when absent)."""
        try:
            return json.loads((self.folder / "instance" / "secantus.json").read_text())
        except (OSError, ValueError):
            return {}

    def database_pid(self) -> int | None:
        return self.database_state().get("pid")


# ----- email -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inbox():
    box = Inbox().start()
    yield box
    box.stop()


# ----- databases ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_db_uri(mongo_server):
    """A database of the session's SecantusDB server that one module's product uses; dropped afterwards."""
    yield from fresh_database(mongo_server, "acc_")
