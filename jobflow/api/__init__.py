"""The JSON API blueprint (``/api``)."""
from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from . import admin, errors, health, jobs, openapi, similar  # noqa: E402,F401  (routes register on import)


@bp.after_request
def cors(response):
    """Let the board's frontend origins read the public API (CORS_ORIGINS)."""
    from flask import current_app, request
    origin = request.headers.get("Origin")
    allowed = current_app.config.get("CORS_ORIGINS") or []
    if origin and request.method in ("GET", "HEAD", "OPTIONS") and ("*" in allowed or origin.rstrip("/") in allowed):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        response.headers.add("Vary", "Origin")
    return response
