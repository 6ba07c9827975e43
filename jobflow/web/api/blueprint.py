"""The JSON API's blueprint (``/api``): its routes live in the modules beside this one."""
from flask import Blueprint, current_app, request

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.after_request
def cors(response):
    """Let the board's frontend origins read the public API (CORS_ORIGINS)."""
    origin = request.headers.get("Origin")
    allowed = current_app.config.get("CORS_ORIGINS") or []
    if origin and request.method in ("GET", "HEAD", "OPTIONS") and ("*" in allowed or origin.rstrip("/") in allowed):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        response.headers.add("Vary", "Origin")
    return response
