"""JobFlow Similar: embeddings and similar jobs for a job board."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from dotenv import load_dotenv
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from .config import load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the web application: settings, extensions, database, blueprints, commands."""
    test_config = dict(test_config or {})
    instance_path = test_config.pop("INSTANCE_PATH", None) or os.environ.get("JOBFLOW_INSTANCE_PATH") \
        or str(PROJECT_ROOT / "instance")
    app = Flask(__name__, instance_path=instance_path,
                template_folder=str(PROJECT_ROOT / "templates"), static_folder=str(PROJECT_ROOT / "static"))
    if not test_config.get("TESTING"):
        load_env_file(PROJECT_ROOT / ".env")
    settings = load_settings(overrides={k: v for k, v in test_config.items()})
    app.config.update(settings)
    app.config.update({k: v for k, v in test_config.items() if k not in settings})
    _configure_web(app)
    _register_extensions(app)
    _connect_database(app)
    _register_blueprints(app)
    _register_commands(app)
    return app


def load_env_file(path: Path) -> None:
    """Read ``.env`` into the environment (the environment wins); warn once per process tree of unknown names."""
    import sys

    from dotenv import dotenv_values

    from .config import unknown_names
    load_dotenv(path, override=False)
    if os.environ.get("JOBFLOW_ENV_CHECKED") == str(path):
        return
    os.environ["JOBFLOW_ENV_CHECKED"] = str(path)   # forked and child processes do not repeat the warnings
    for warning in unknown_names(dotenv_values(path)) if path.exists() else ():
        print(f"jobflow: warning: {path.name}: {warning}", file=sys.stderr)


def _instance_secret(app: Flask, name: str, filename: str) -> None:
    """Use the configured secret, or one generated once and kept (mode 600) in the private instance folder.

    An existing file that group or others may read is made private first, with one log line; when that is
    impossible the app refuses to start rather than use a secret others can read.
    """
    from .config import ConfigError
    from .db import make_private, private_dir
    from .logs import warn_early
    path = Path(app.instance_path) / filename
    in_use = not app.config.get(name)
    if path.exists():
        try:
            if make_private(path):
                warn_early(log, "%s was readable by other users: changed its mode to 600", path)
        except OSError as exc:
            if in_use:
                raise ConfigError(f"{name}: {path} is readable by other users and its mode cannot be changed "
                                  f"({exc.strerror}); run: chmod 600 {path}") from None
            warn_early(log, "%s is readable by other users and its mode cannot be changed (%s)", path, exc.strerror)
    if not in_use:
        return
    private_dir(path.parent)
    if not path.exists():
        # Written whole under another name, then linked into place: a process starting at the same moment reads
        # either no file or the complete one, and of two the first link wins.
        draft = path.with_name(f".{filename}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    app.config[name] = path.read_text().strip()


def cookie_secure(config) -> bool:
    """SESSION_COOKIE_SECURE: true, false, or empty = when PUBLIC_BASE_URL is https."""
    value = config.get("SESSION_COOKIE_SECURE")
    if isinstance(value, bool):
        return value
    value = str(value or "").strip().lower()
    if value in ("true", "false"):
        return value == "true"
    return str(config.get("PUBLIC_BASE_URL", "")).lower().startswith("https://")


def _configure_web(app: Flask) -> None:
    _instance_secret(app, "SECRET_KEY", "secret_key")
    _instance_secret(app, "ADMIN_API_TOKEN", "api_token")
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
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    app.json = _JSONProvider(app)
    app.json.sort_keys = False
    from .auth.headers import security_headers
    app.after_request(security_headers)


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, except that a body nested too deeply to parse is invalid JSON (400), not a RecursionError (500)."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def _register_extensions(app: Flask) -> None:
    from .extensions import csrf, limiter, login_manager, mail
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    from . import auth  # noqa: F401  (registers the user loader)
    mail.init_app(app)


def _connect_database(app: Flask) -> None:
    from .db import connect
    from .models import ensure_indexes
    from .startup import prepare_database
    app.config["DATABASE_URI"] = prepare_database(app.config, app.instance_path)
    connect(app.config["DATABASE_URI"])
    dropped = ensure_indexes()
    if dropped:
        log.info("dropped indexes no query uses: %s", ", ".join(dropped))


def _register_blueprints(app: Flask) -> None:
    from pymongo.errors import PyMongoError
    from werkzeug.exceptions import HTTPException

    from .admin import bp as admin_bp
    from .api import bp as api_bp
    from .api.errors import (
        APIError,
        handle_api_error,
        handle_database_error,
        handle_http,
        handle_not_found,
        handle_validation,
    )
    from .auth import bp as auth_bp
    from .extensions import csrf
    from .job_store import JobNotFound, ValidationError
    from .web import bp as web_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(web_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(admin_bp)
    from .prometheus import bp as metrics_bp
    app.register_blueprint(metrics_bp)
    csrf.exempt(api_bp)  # the API authenticates with a Bearer token, not a cookie
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(ValidationError, handle_validation)
    app.register_error_handler(JobNotFound, handle_not_found)
    # The database down (killed, restarting, failing over): 503 within seconds, not a 500 with a traceback.
    app.register_error_handler(PyMongoError, handle_database_error)

    from flask import request

    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return handle_http(exc)
        return exc
    app.register_error_handler(HTTPException, http_error)


def _register_commands(app: Flask) -> None:
    from .cli import register
    register(app)
