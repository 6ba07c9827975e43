"""gunicorn settings for the web processes. They never run the scheduler: the worker is its own process
(``flask --app app worker``). Run: ``gunicorn -c gunicorn.conf.py``.

``.env`` is read first, so PORT, HOST and WEB_CONCURRENCY set there apply (the environment still wins).
"""
import os
from pathlib import Path

from dotenv import load_dotenv

ROOT = Path(__file__).resolve().parent
load_dotenv(ROOT / ".env", override=False)

wsgi_app = "wsgi:app"
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5001')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
preload_app = False  # each web process connects after the fork (pymongo clients are not fork-safe)
accesslog = "-"
errorlog = "-"
access_log_format = '%(t)s %(h)s "%(r)s" %(s)s %(b)s %(M)sms'
capture_output = True


def on_starting(server):
    """Before binding: every bad setting named (one line each), the database reached or the embedded one started.

    With MONGODB_URI unset, the master starts (or reuses) the embedded database and stays one of its users, so it
    runs as long as the web service (or the worker) does.
    """
    from jobflow import load_env_file
    from jobflow.config import ConfigError, load_settings
    from jobflow.db import DatabaseUnavailable
    from jobflow.startup import fail, prepare_database
    load_env_file(ROOT / ".env")
    try:
        settings = load_settings()
        instance = os.environ.get("JOBFLOW_INSTANCE_PATH") or str(ROOT / "instance")
        uri = prepare_database(settings, instance)
    except ConfigError as exc:
        fail(exc.problems, 2)
    except DatabaseUnavailable as exc:
        fail([str(exc)], 2)
    if not settings["MONGODB_URI"]:
        server.log.info("embedded database: %s", uri.rsplit("/", 1)[0])
