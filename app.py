"""JobFlow Similar. ``python app.py`` runs the whole product on one machine.

The web app, the embedding worker (as a thread, when EMBEDDING_WORKER_ENABLED)
and the embedded database (when MONGODB_URI is unset), with demo data on the
first run. In production run gunicorn (``gunicorn.conf.py``) and
``flask --app app worker`` as separate processes.
"""
import sys

from jobflow import create_app
from jobflow.config import ConfigError
from jobflow.db import DatabaseUnavailable


def _build():
    try:
        return create_app()
    except (ConfigError, DatabaseUnavailable) as exc:
        print(f"jobflow: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    from jobflow.runner import run_all_in_one
    sys.exit(run_all_in_one(_build()))

app = _build()
