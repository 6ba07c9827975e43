"""``python app.py``: web app, worker thread, embedded database and demo data in one process."""
from __future__ import annotations

import logging
import signal
import sys
import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from jobflow.logs import setup_logging

log = logging.getLogger("jobflow")


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, but its Server header names no versions (werkzeug's and Python's by default)."""

    def version_string(self) -> str:
        return "JobFlow"


def make_http_server(app: Flask, host: str, port: int) -> BaseWSGIServer:
    """The threaded HTTP server of ``python app.py``; raises OSError when the port cannot be bound."""
    return make_server(host, port, app, threaded=True, request_handler=_RequestHandler)


def _load_demo_if_empty(app: Flask) -> None:
    from jobflow.models import Job
    from jobflow.ops.importer import load_demo_data
    if not app.config["DEMO_DATA"] or Job.objects.limit(1).count(with_limit_and_skip=True):
        return
    report = load_demo_data()
    log.info("first run: loaded %d demo postings (%d queued for embedding)", report.imported, report.queued)


def run_all_in_one(app: Flask) -> int:
    """Serve on PORT until SIGINT/SIGTERM; return the exit code."""
    setup_logging(app.config)
    host, port = app.config["HOST"], app.config["PORT"]
    try:
        server = make_http_server(app, host, port)
    except OSError as exc:
        print(f"jobflow: cannot start: port {port} is not available ({exc.strerror}); set PORT to another port",
              file=sys.stderr)
        return 2
    with app.app_context():
        _load_demo_if_empty(app)
        from jobflow.ops.users import first_run_notice
        notice = first_run_notice()
        if notice:
            print(notice, file=sys.stderr)
    # With EMBEDDING_WORKER_ENABLED=false the worker claims nothing but still checks alerts and records metrics.
    from jobflow.worker.loop import Worker
    worker = Worker.from_app(app)
    worker.start()

    def stop(signum, frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        server.shutdown()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    log.info("JobFlow Similar is up: http://%s:%s/  (dashboard: /admin/embeddings, API: /api/jobs)", shown, port)
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    while serving.is_alive():       # with a timeout: a signal the kernel hands to another thread is handled here
        serving.join(0.5)
    worker.stop()
    return 0
