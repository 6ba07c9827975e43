"""gunicorn settings for the web processes. They never run the scheduler: the worker is its own process
(``flask --app app worker``). Run: ``gunicorn -c gunicorn.conf.py``.

``.env`` is read first, so PORT, HOST and WEB_CONCURRENCY set there apply (the environment still wins).
"""
import os
from pathlib import Path

from gunicorn.glogging import Logger

from jobflow import load_env_file
from jobflow.startup import fail, settings_or_exit

ROOT = Path(__file__).resolve().parent
load_env_file(ROOT / ".env")
SETTINGS = settings_or_exit()   # every bad setting named on a line of its own, before anything binds


class JobflowLogger(Logger):
    """gunicorn's own log lines (errors, access) with the product's redaction, and as JSON with LOG_FORMAT=json.

    Its ``Server: gunicorn`` response header carries no version (gunicorn has no setting to change it).
    """

    def setup(self, cfg):
        super().setup(cfg)
        from jobflow.logs import style_handler
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                style_handler(handler, SETTINGS, reformat=False)


def _whole_number(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        fail([f"{name}={raw!r}: expected a whole number of at least 1"], 2)
    return value


wsgi_app = "wsgi:app"
bind = f"{SETTINGS['HOST']}:{SETTINGS['PORT']}"
workers = _whole_number("WEB_CONCURRENCY", 2)
threads = _whole_number("GUNICORN_THREADS", 4)
worker_class = "gthread"
timeout = _whole_number("GUNICORN_TIMEOUT", 30)
graceful_timeout = _whole_number("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = 5
preload_app = False  # each web process connects after the fork (pymongo clients are not fork-safe)
accesslog = "-"
errorlog = "-"
access_log_format = '%(t)s %(h)s "%(r)s" %(s)s %(b)s %(M)sms'
capture_output = True
logger_class = JobflowLogger
# X-Forwarded-* are trusted per TRUSTED_PROXIES, by the app (werkzeug's ProxyFix), never by gunicorn itself:
# by default gunicorn would take X-Forwarded-Proto from any client on 127.0.0.1, even with TRUSTED_PROXIES=0.
forwarded_allow_ips = ""


def on_starting(server):
    """Before binding: the database reached, or the embedded one started (or reused).

    With MONGODB_URI unset, the master starts (or reuses) the embedded database and stays one of its users, so it
    runs as long as the web service (or the worker) does.
    """
    from jobflow.db import DatabaseUnavailable, prepare_database
    instance = os.environ.get("JOBFLOW_INSTANCE_PATH") or str(ROOT / "instance")
    try:
        uri = prepare_database(SETTINGS, instance)
    except DatabaseUnavailable as exc:
        fail([str(exc)], 2)
    if not SETTINGS["MONGODB_URI"]:
        server.log.info("embedded database: %s", uri.rsplit("/", 1)[0])
