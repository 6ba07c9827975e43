"""Harness of the acceptance suite: a copy of the product with its own ``.env``, its commands as processes,
an SMTP inbox, a signed-in browser and a patient ``wait_until``.

Everything here looks at the product from outside: files it is given, commands an operator types, HTTP,
the database through pymongo and what the processes print. Settings go into ``.env`` in the copy's
folder; the environment of a command carries only PATH-like things (and, where a test says so, what
systemd or a shell would add).
"""
from __future__ import annotations

import email
import http.cookiejar
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email import policy
from pathlib import Path

import psutil
import pytest
from aiosmtpd.controller import Controller
from conftest import fresh_database
from faults.conftest import BIN, CITIES, ROLES, ROOT, assert_clean_output, http_get
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from jobflow.db import free_port

__all__ = ["APP", "FLASK", "GUNICORN", "Inbox", "Product", "Browser", "api", "assert_clean_output",
           "assert_one_line_per_event", "free_port", "http_get", "metric_values", "wait_until", "write_jobs"]

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


# ----- waiting ----------------------------------------------------------------------------------------------

def wait_until(what: str, check, timeout: float = 90, every: float = 0.5, processes=(), seen=None):
    """Poll ``check`` until it returns something truthy (returned); fail with what was last seen.

    An error from the database or the network counts as "not yet". ``processes`` must stay up; ``seen``
    is a callable describing the current state for the failure message.
    """
    started = time.monotonic()
    last, error = None, None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (OSError, PyMongoError, ValueError, KeyError) as exc:
            error = exc
        for proc in processes:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited with {proc.process.returncode} while waiting for {what}:\n"
                                     f"{proc.tail()}")
        if time.monotonic() - started > timeout:
            state = seen() if seen else last
            tails = "".join(f"\n--- {p.name} (last lines) ---\n{p.tail(2500)}" for p in processes)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {state!r}; "
                                 f"last error: {error!r}{tails}")
        time.sleep(every)


# ----- processes --------------------------------------------------------------------------------------------

class Running:
    """A command of the product running in the background, its stdout and stderr in one log file."""

    def __init__(self, name: str, args: list[str], cwd: Path, env: dict, log_path: Path):
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.started = time.monotonic()
        # Its own process group, so teardown can end gunicorn's workers with the master.
        self.process = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` (SIGTERM: what systemd sends) and wait; the exit code."""
        if self.alive():
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s of signal {sig}:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the process and its group (teardown); nothing when it has already exited."""
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


@dataclass
class Finished:
    """A command that ran to its end: exit code, everything it printed, how long it took."""
    name: str
    returncode: int
    text: str
    seconds: float

    def output(self) -> str:
        return self.text

    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


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
        self.running: list[Running] = []
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
    def start(self, name: str, args: list[str], extra_env: dict | None = None) -> Running:
        proc = Running(name, args, self.folder, self.environment(extra_env),
                       self.logs / f"{len(self.running):02d}-{name}.log")
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


def write_jobs(path: Path, count: int, tag: str, words: int = 0, status: str = "active") -> Path:
    """A JSON-lines file of ``count`` distinct postings (``words`` extra words make a long description)."""
    with open(path, "w") as handle:
        for i in range(count):
            role, category = ROLES[i % len(ROLES)]
            city = CITIES[(i // len(ROLES)) % len(CITIES)]
            extra = " ".join(f"detail{n}" for n in range(words))
            handle.write(json.dumps({
                "id": f"{tag}-{i}", "title": f"{role} {tag} {i}", "company": f"Company {i % 13}",
                "category": category, "location": city, "status": status,
                "description": f"{role} in {city}, team {i % 7}, posting {tag} {i}. {extra}".strip()}) + "\n")
    return path


# README: "Both log to stdout with timestamps, one line per event". gunicorn's own and access lines start with
# "[date]"; start-up problems and warnings with "jobflow: ".
EVENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d|\[|jobflow: )")


def assert_one_line_per_event(*processes) -> None:
    """Every line the long-running processes printed is one event: timestamped (or a start-up line)."""
    for proc in processes:
        stray = [line for line in proc.output().splitlines() if line.strip() and not EVENT_LINE.match(line)]
        assert not stray, f"{proc.name} printed lines that are not one event each: {stray[:6]}"


# ----- HTTP -------------------------------------------------------------------------------------------------

def api(method: str, url: str, body=None, token: str | None = None, timeout: float = 20) -> tuple[int, object]:
    """One JSON API call: (status, decoded body); error statuses are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text format: ``name{labels}`` -> value."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values


class Browser:
    """An admin's browser: cookies kept, forms posted with their CSRF token."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, page text, final URL) after redirects."""
        try:
            with self.opener.open(self.base + path, timeout=30) as response:
                return response.status, response.read().decode("utf-8", "replace"), response.geturl()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace"), exc.geturl()

    def post_form(self, path: str, fields: dict) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(urllib.request.Request(self.base + path, data=data, method="POST"),
                                  timeout=30) as response:
                return response.status, response.read().decode("utf-8", "replace"), response.geturl()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace"), exc.geturl()

    def sign_in(self, email_address: str, password: str) -> None:
        """The login form, as a person fills it in; lands on the dashboard."""
        status, page, _ = self.get("/login")
        assert status == 200, page[:500]
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        status, page, url = self.post_form("/login", {"email": email_address, "password": password,
                                                      "csrf_token": token})
        assert status == 200 and url.endswith("/admin/embeddings"), (status, url, page[:500])


# ----- email --------------------------------------------------------------------------------------------------

KINDS = {"Alert": "opened", "Still open": "reminder", "Resolved": "resolved"}
# The words of each rule's title (the subject's part before " - "), most specific first.
RULE_WORDS = (("provider", "provider"), ("failures", "failure"), ("queue", "queue"), ("coverage", "coverage"),
              ("workers", "worker"))
SUBJECT = re.compile(r"^\[JobFlow Similar\] (Alert|Still open|Resolved): (.*?)(?: - (.*))?$")


@dataclass
class Mail:
    """One email the SMTP server accepted, when, and what it is about."""
    at: float            # time.monotonic() when it arrived
    subject: str
    message: email.message.EmailMessage
    recipients: list[str]

    @property
    def kind(self) -> str | None:
        match = SUBJECT.match(self.subject)
        return KINDS[match.group(1)] if match else None

    @property
    def rule(self) -> str | None:
        match = SUBJECT.match(self.subject)
        title = match.group(2).lower() if match else ""
        return next((rule for rule, word in RULE_WORDS if word in title), None)

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        return body.get_content() if body is not None else ""


class Inbox:
    """The mailbox behind a real SMTP server on 127.0.0.1 (aiosmtpd)."""

    def __init__(self):
        self.mails: list[Mail] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        subject = " ".join(str(message["Subject"] or "").split())
        with self._lock:
            self.mails.append(Mail(time.monotonic(), subject, message, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def about(self, rule: str, kind: str | None = None) -> list[Mail]:
        with self._lock:
            return [m for m in self.mails if m.rule == rule and (kind is None or m.kind == kind)]

    def subjects(self) -> list[str]:
        with self._lock:
            return [m.subject for m in self.mails]

    def wait_for(self, rule: str, kind: str, timeout: float = 90, processes=(), count: int = 1) -> list[Mail]:
        """Wait until ``count`` emails of ``kind`` about ``rule`` arrived; them."""
        return wait_until(f"{count} {kind} email(s) about the {rule} alert",
                          lambda: len(self.about(rule, kind)) >= count and self.about(rule, kind),
                          timeout, processes=processes, seen=self.subjects)


@pytest.fixture(scope="module")
def inbox():
    box = Inbox()
    box.controller.start()
    yield box
    box.controller.stop()


# ----- databases ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_db_uri(mongo_server):
    """A database of the session's SecantusDB server that one module's product uses; dropped afterwards."""
    yield from fresh_database(mongo_server, "acc_")


def database(uri: str):
    """A pymongo handle on the database named in ``uri`` (what an operator's mongosh would open)."""
    client = MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    return client.get_database(urllib.parse.urlparse(uri).path.lstrip("/") or "jobflow")
