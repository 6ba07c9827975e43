"""WSGI entry point for gunicorn: the web app only, never the scheduler."""
from jobflow.logs import setup_logging
from jobflow.startup import build_app

# Exit code 4 is gunicorn's "App failed to load": the master stops instead of starting workers again and again.
app = build_app(exit_code=4)

# One line per event with a timestamp, secrets redacted, as in every other process.
setup_logging(app.config)
