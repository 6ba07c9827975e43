"""WSGI entry point for gunicorn: the web app only, never the scheduler."""
from app import app  # noqa: F401
