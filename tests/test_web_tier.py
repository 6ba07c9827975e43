"""The web tier behind a reverse proxy: secure cookies and HSTS, X-Forwarded-* per TRUSTED_PROXIES, a Server
header without versions, secrets on disk only for their owner, and logs (text or JSON) without secrets."""
import errno
import http.client
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from jobflow import logs
from jobflow.config import SECRET_NAMES, ConfigError
from jobflow.db import free_port
from tests.support.web import csrf_from

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JSON_KEYS = {"time", "level", "logger", "process", "message"}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- Secure cookies and HSTS ---------------------------------------------------------------------------------

@pytest.mark.parametrize("setting,base_url,secure", [
    ("", "http://127.0.0.1:5001", False),
    ("", "https://jobs.example.com", True),
    ("false", "https://jobs.example.com", False),
    ("true", "http://127.0.0.1:5001", True),
])
def test_session_cookie_secure_follows_the_setting_and_brings_hsts(make_app, setting, base_url, secure):
    app = make_app(SESSION_COOKIE_SECURE=setting, PUBLIC_BASE_URL=base_url)
    assert app.config["SESSION_COOKIE_SECURE"] is secure      # a bool: the string "false" would be truthy to Flask
    assert app.config["REMEMBER_COOKIE_SECURE"] is secure
    client = app.test_client()
    page = client.get("/login")                               # the CSRF token puts a session cookie
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("session=") and "HttpOnly" in cookie
    assert ("; Secure" in cookie) is secure
    for response in (page, client.get("/api/openapi.json"), client.get("/no-such-page")):
        assert response.headers.get("Strict-Transport-Security") == ("max-age=31536000" if secure else None)


# --- X-Forwarded-* per TRUSTED_PROXIES ------------------------------------------------------------------------

def _probe(app):
    from flask import jsonify, request
    app.add_url_rule("/_probe", "probe", lambda: jsonify(addr=request.remote_addr, scheme=request.scheme,
                                                         host=request.host))
    return app.test_client()


FORWARDED = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "jobs.example.com"}


def test_forwarded_headers_are_ignored_without_trusted_proxies(make_app):
    client = _probe(make_app())
    seen = client.get("/_probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_json()
    assert seen == {"addr": "127.0.0.1", "scheme": "http", "host": "localhost"}


def test_one_trusted_proxy_gives_the_client_address_scheme_and_host(make_app, caplog):
    client = _probe(make_app(TRUSTED_PROXIES=1))
    seen = client.get("/_probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_json()
    # The address the one trusted proxy saw (the last one); the first was written by the client and is not believed.
    assert seen == {"addr": "203.0.113.9", "scheme": "https", "host": "jobs.example.com"}
    # What the rate limit and the sign-in log use.
    token = csrf_from(client.get("/login", headers=FORWARDED).get_data(as_text=True))
    with caplog.at_level(logging.WARNING):
        client.post("/login", data={"email": "x@example.com", "password": "wrong", "csrf_token": token},
                    headers={**FORWARDED, "Referer": "https://jobs.example.com/login"})
    assert "failed sign-in from 203.0.113.9" in caplog.text


# --- No versions in the Server header -------------------------------------------------------------------------

def test_python_app_py_server_header_names_no_version(app):
    from jobflow.runner import make_http_server
    server = make_http_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        connection.request("GET", "/login")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Server") == "JobFlow"
        # The server's own error page (a request line it cannot parse) too.
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(b"GET /a b HTTP/1.1\r\n\r\n")
            raw = sock.recv(65536).decode("latin-1")
        assert raw.startswith("HTTP/1.") and "\r\nServer: JobFlow\r\n" in raw
        assert "Werkzeug" not in raw and "Python" not in raw
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- Secrets on disk -------------------------------------------------------------------------------------------

def test_generated_secrets_live_in_a_private_instance_folder(make_app):
    old = os.umask(0o022)              # the usual umask: folders 755, files 644 unless told otherwise
    try:
        app = make_app(SECRET_KEY="", ADMIN_API_TOKEN="")
    finally:
        os.umask(old)
    instance = Path(app.instance_path)
    assert mode(instance) == 0o700
    assert mode(instance / "secret_key") == 0o600 and mode(instance / "api_token") == 0o600
    assert app.config["SECRET_KEY"] == (instance / "secret_key").read_text().strip()


def _readable_secret(tmp_path, name="secret_key", value="k" * 43) -> Path:
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    os.chmod(instance, 0o755)
    path = instance / name
    path.write_text(value)
    os.chmod(path, 0o644)
    return path


def test_a_secret_file_others_can_read_is_repaired_with_one_line(make_app, tmp_path, caplog):
    path = _readable_secret(tmp_path)
    with caplog.at_level(logging.WARNING):
        app = make_app(SECRET_KEY="")
        make_app(SECRET_KEY="")                  # the next start finds it private: nothing to say
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert app.config["SECRET_KEY"] == "k" * 43
    lines = [r.getMessage() for r in caplog.records if "secret_key" in r.getMessage()]
    assert lines == [f"{path} was readable by other users: changed its mode to 600"]
    assert "k" * 43 not in caplog.text


def test_a_secret_file_that_cannot_be_made_private_is_refused(make_app, tmp_path, monkeypatch):
    path = _readable_secret(tmp_path, "api_token", "t" * 43)

    def refuse(fd, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "fchmod", refuse)
    with pytest.raises(ConfigError) as info:
        make_app(ADMIN_API_TOKEN="")
    (line,) = info.value.problems
    assert line.startswith("ADMIN_API_TOKEN: ") and str(path) in line and "chmod 600" in line
    assert "t" * 43 not in line
    assert mode(path) == 0o644


def test_a_start_up_warning_waits_for_the_configured_format(capsys, monkeypatch, restore_logging):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])        # as in gunicorn's workers before wsgi.py's setup
    logs.warn_early(logging.getLogger("jobflow"), "%s was readable by other users: changed its mode to 600", "/x/api_token")
    assert capsys.readouterr().err == ""
    logs.setup_logging({"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"})
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["message"] == "/x/api_token was readable by other users: changed its mode to 600"
    assert record["level"] == "WARNING" and record["logger"] == "jobflow"


# --- Logs ------------------------------------------------------------------------------------------------------

@pytest.fixture
def restore_logging():
    """setup_logging changes the root logger and some levels: put them back afterwards."""
    root = logging.getLogger()
    names = ("apscheduler", "werkzeug", "pymongo", "jobflow.worker", "jobflow.queue", "jobflow.embeddings")
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in names})
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_jobflow", False):
            root.removeHandler(handler)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def logged(capsys, restore_logging):
    """What setup_logging(settings)'s stdout shows of the records ``emit(logger)`` makes."""
    def run(settings: dict, emit) -> str:
        logs.setup_logging({"LOG_LEVEL": "INFO", **settings})
        capsys.readouterr()
        emit(logging.getLogger("jobflow.test_web_tier"))
        return capsys.readouterr().out
    return run


SECRET_VALUES = {"OPENAI_API_KEY": "key-5f1e9a0c7b3d", "MAIL_PASSWORD": "mail-pass-81c2e4",
                 "MONGODB_URI": "mongodb://db.internal.example:27017/jobs_7c1d", "SECRET_KEY": "s" * 40,
                 "ADMIN_API_TOKEN": "admin-token-6d0b3f2e"}


def test_every_secret_setting_is_redacted(logged):
    assert set(SECRET_VALUES) == SECRET_NAMES        # a new secret setting needs a value here
    text = logged(SECRET_VALUES, lambda log: [log.info("value of %s: %s", name, value)
                                               for name, value in SECRET_VALUES.items()])
    assert len(text.splitlines()) == len(SECRET_VALUES)
    for value in SECRET_VALUES.values():
        assert value not in text


@pytest.mark.parametrize("uri,shown", [
    ("mongodb://jobflow:hunter2-pw@db.example.com:27017/jobs", "mongodb://jobflow:***@db.example.com:27017/jobs"),
    ("mongodb+srv://app:p%40ss-w0rd@cluster0.example.net/jobs?retryWrites=true",
     "mongodb+srv://app:***@cluster0.example.net/jobs?retryWrites=true"),
])
def test_the_password_of_any_mongodb_uri_is_redacted(logged, uri, shown):
    text = logged({}, lambda log: log.warning("cannot reach %s, retrying", uri))
    assert text.rstrip("\n").endswith(f"cannot reach {shown}, retrying")


def test_json_lines_have_five_fields_no_traceback_and_no_secret(logged):
    token = SECRET_VALUES["ADMIN_API_TOKEN"]

    def emit(log):
        log.info("plain %s", "line", extra={"token": token})
        try:
            raise ValueError(f"bad token {token}")
        except ValueError:
            log.exception("request failed for mongodb://u:pw-123456@h/db")
    text = logged({**SECRET_VALUES, "LOG_FORMAT": "json"}, emit)
    lines = text.splitlines()
    assert len(lines) == 2, text
    records = [json.loads(line) for line in lines]
    assert all(set(r) == JSON_KEYS for r in records)
    assert records[0]["message"] == "plain line" and records[0]["level"] == "INFO"
    assert records[0]["logger"] == "jobflow.test_web_tier" and records[0]["process"] == os.getpid()
    datetime.strptime(records[0]["time"], "%Y-%m-%dT%H:%M:%S%z")
    assert records[1]["level"] == "ERROR"
    assert records[1]["message"] == "request failed for mongodb://u:***@h/db (ValueError: bad token ***)"
    assert "Traceback" not in text and token not in text and "pw-123456" not in text


def test_the_scheduler_says_a_run_was_missed_but_not_that_one_was_skipped(capsys, caplog, restore_logging):
    from apscheduler.schedulers.background import BackgroundScheduler
    logs.setup_logging({"LOG_LEVEL": "INFO"})
    gate = threading.Event()
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(gate.wait, "interval", seconds=0.2, args=(5,), max_instances=1,
                      next_run_time=datetime.now(timezone.utc))
    scheduler.add_job(print, "date", run_date=datetime.now(timezone.utc) - timedelta(seconds=5),
                      misfire_grace_time=1, name="late")
    scheduler.start()
    deadline = time.monotonic() + 10
    while "maximum number of running instances" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.1)
    gate.set()
    scheduler.shutdown(wait=True)
    out = capsys.readouterr().out
    assert 'Run time of job "late' in out and "was missed by" in out  # a missed run is a line of the log,
    assert " WARNING apscheduler.executors.default " in out
    assert "maximum number of running instances" in caplog.text     # a skipped one did happen...
    assert "maximum number of running instances" not in out          # ...but is not a line of the log
    assert "Added job" not in out                                    # nor are the scheduler's INFO lines


# --- gunicorn --------------------------------------------------------------------------------------------------

def test_gunicorn_conf_leaves_forwarded_headers_to_trusted_proxies(tmp_path):
    env = {**os.environ, "JOBFLOW_INSTANCE_PATH": str(tmp_path), "HOST": "127.0.0.1", "PORT": "5099",
           "FORWARDED_ALLOW_IPS": "*"}
    code = ("import json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
            "print(json.dumps([c['bind'], c['forwarded_allow_ips'], c['logger_class'].__name__]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == ["127.0.0.1:5099", "", "JobflowLogger"]


def _request(port, method, path, headers=None, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response, response.read().decode()


@pytest.mark.slow
def test_gunicorn_behind_a_proxy_secure_cookies_json_logs_and_no_version(db_uri, tmp_path):
    port = free_port()
    token, secret_key = "gunicorn-token-4a7e1c9d0b", "gunicorn-secret-key-0f3a8e6c1d7b2e9a5c4f"
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "MONGODB_URI": db_uri,
           "JOBFLOW_INSTANCE_PATH": str(tmp_path / "instance"), "ADMIN_API_TOKEN": token, "SECRET_KEY": secret_key,
           "EMBEDDING_PROVIDER": "local", "OPENAI_API_KEY": "", "DEMO_DATA": "false", "WEB_CONCURRENCY": "1",
           "TRUSTED_PROXIES": "1", "SESSION_COOKIE_SECURE": "true", "LOG_FORMAT": "json"}
    web = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page, html = _request(port, "GET", "/login")
                break
            except OSError:
                assert web.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.3)
        assert page.status == 200
        assert page.getheader("Server") == "gunicorn"                 # no version
        assert page.getheader("Strict-Transport-Security") == "max-age=31536000"
        cookie = page.getheader("Set-Cookie")
        assert "; Secure" in cookie
        proxy = {"X-Forwarded-For": "203.0.113.77", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "jobs.example.com"}
        body = f"email=nobody%40example.com&password=wrong&csrf_token={csrf_from(html)}"
        failed, _ = _request(port, "POST", "/login", body=body,
                             headers={**proxy, "Cookie": cookie.split(";")[0], "Referer": "https://jobs.example.com/login",
                                      "Content-Type": "application/x-www-form-urlencoded"})
        assert failed.status == 401
        assert failed.getheader("Server") == "gunicorn"
        _request(port, "GET", f"/api/jobs?note={token}")              # the query string is in the access log
    finally:
        web.send_signal(signal.SIGTERM)
        out, err = web.communicate(timeout=30)
    records = []
    for line in (out + err).splitlines():
        if line.startswith("jobflow: "):      # start-up notes printed before logging (a stray .env's names)
            continue
        record = json.loads(line)             # every log line is one JSON object...
        assert set(record) == JSON_KEYS, line  # ...of exactly these fields
        records.append(record)
    messages = [r["message"] for r in records]
    assert "failed sign-in from 203.0.113.77" in messages               # the client's address, from the proxy
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    assert any("/api/jobs?note=***" in r["message"] for r in access)
    assert any(r["logger"] == "gunicorn.error" for r in records)
    text = out + err
    assert token not in text and secret_key not in text and "Traceback" not in text
