"""gunicorn settings for the web processes. They never run the scheduler: the worker is its own process
(``flask --app app worker``). Run: ``gunicorn -c gunicorn.conf.py``."""
import os

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

_embedded = None


def on_starting(server):
    """With MONGODB_URI unset, the master starts (or reuses) the embedded database so every web process shares it."""
    global _embedded
    from dotenv import load_dotenv
    load_dotenv(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".env"), override=False)
    if os.environ.get("MONGODB_URI"):
        return
    from pathlib import Path
    from jobflow.db import EmbeddedServer
    instance = os.environ.get("JOBFLOW_INSTANCE_PATH") or str(Path(__file__).resolve().parent / "instance")
    _embedded = EmbeddedServer(Path(instance) / "secantus")
    server.log.info("embedded database: %s", _embedded.ensure().rsplit("/", 1)[0])


def on_exit(server):
    """Stop the embedded database if the master started it."""
    if _embedded is not None:
        _embedded.stop()
