"""WSGI entry point for gunicorn: the web app only, never the scheduler."""
from app import app
from jobflow.logs import setup_logging

# One line per event with a timestamp, secrets redacted, as in every other process.
setup_logging(app.config)
