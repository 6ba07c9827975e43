"""The JSON API blueprint (``/api``)."""
from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from . import errors, jobs  # noqa: E402,F401  (routes register on import)
