"""The web tier: the blueprints (API, admin pages, sign-in, public pages, ``/metrics``) and their shared parts.

Each blueprint is imported only here, by the factory's ``register_blueprints``;
they share ``access`` (who may do what), ``errors`` (the API's one error shape)
and ``headers``, and call the services below them, never each other.
"""
from __future__ import annotations

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from pymongo.errors import PyMongoError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from jobflow.extensions import csrf
from jobflow.jobs.store import JobNotFound, ValidationError
from jobflow.web import access, admin, api, auth, errors, metrics, public
from jobflow.web.headers import security_headers


def cookie_secure(config) -> bool:
    """SESSION_COOKIE_SECURE: true, false, or empty = when PUBLIC_BASE_URL is https."""
    value = config.get("SESSION_COOKIE_SECURE")
    if isinstance(value, bool):
        return value
    value = str(value or "").strip().lower()
    if value in ("true", "false"):
        return value == "true"
    return str(config.get("PUBLIC_BASE_URL", "")).lower().startswith("https://")


def configure(app: Flask) -> None:
    """Cookies, body limit, proxies, JSON and the security headers."""
    app.config["MAX_CONTENT_LENGTH"] = app.config["API_MAX_BODY_BYTES"]
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    # Flask pre-sets SESSION_COOKIE_SAMESITE to None, so setdefault would never apply.
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    app.config.setdefault("REMEMBER_COOKIE_HTTPONLY", True)
    # The setting is "", "true" or "false" (a non-empty string would be truthy to Flask): a real bool here.
    secure = cookie_secure(app.config)
    app.config["SESSION_COOKIE_SECURE"] = secure
    app.config["REMEMBER_COOKIE_SECURE"] = secure
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies > 0:
        # Client address, scheme and host from the X-Forwarded-* of that many proxies (the nearest last).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    app.json = _JSONProvider(app)
    app.json.sort_keys = False
    app.after_request(security_headers)
    access.init_app(app)


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that a body nested too deeply to parse is invalid JSON (400), not a RecursionError (500)."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def register_blueprints(app: Flask) -> None:
    """Every blueprint, and the error handlers that give the API its one error shape."""
    for blueprint in (api.bp, public.bp, auth.bp, admin.bp, metrics.bp):
        app.register_blueprint(blueprint)
    csrf.exempt(api.bp)  # the API authenticates with a Bearer token, not a cookie
    app.register_error_handler(errors.APIError, errors.handle_api_error)
    app.register_error_handler(ValidationError, errors.handle_validation)
    app.register_error_handler(JobNotFound, errors.handle_not_found)
    # The database down (killed, restarting, failing over): 503 within seconds, not a 500 with a traceback.
    app.register_error_handler(PyMongoError, errors.handle_database_error)
    app.register_error_handler(HTTPException, _http_error)


def _http_error(exc: HTTPException):
    if request.path.startswith("/api/"):
        return errors.handle_http(exc)
    return exc
