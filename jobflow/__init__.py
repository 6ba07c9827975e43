"""JobFlow Similar: embeddings and similar jobs for a job board."""
from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from dotenv import dotenv_values, load_dotenv
from flask import Flask

from jobflow.config import ConfigError, load_settings, unknown_names
from jobflow.db import make_private, private_dir
from jobflow.logs import warn_early

PROJECT_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the web application: settings, extensions, database, blueprints, commands."""
    from jobflow import cli, web  # here, not at the top: importing any jobflow module stays light
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
    _instance_secret(app, "SECRET_KEY", "secret_key")
    _instance_secret(app, "ADMIN_API_TOKEN", "api_token")
    web.configure(app)
    _register_extensions(app)
    _connect_database(app)
    web.register_blueprints(app)
    cli.register(app)
    return app


def load_env_file(path: Path) -> None:
    """Read ``.env`` into the environment (the environment wins); warn once per process tree of unknown names."""
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


def _register_extensions(app: Flask) -> None:
    from jobflow.extensions import csrf, login_manager, mail
    csrf.init_app(app)
    login_manager.init_app(app)
    mail.init_app(app)


def _connect_database(app: Flask) -> None:
    from jobflow.db import connect, prepare_database
    from jobflow.models import ensure_indexes
    app.config["DATABASE_URI"] = prepare_database(app.config, app.instance_path)
    connect(app.config["DATABASE_URI"])
    dropped = _with_retries(ensure_indexes, app.config["DATABASE_URI"])
    if dropped:
        log.info("dropped indexes no query uses: %s", ", ".join(dropped))


def _with_retries(work, uri: str, seconds: float = 30.0):
    """``work()``, tried again while the database drops connections (it is restarting) for up to ``seconds``;
    then one line naming the database (DatabaseUnavailable), never a traceback."""
    import time

    from pymongo.errors import ConnectionFailure

    from jobflow.db import DatabaseUnavailable, where
    deadline = time.monotonic() + seconds
    while True:
        try:
            return work()
        except ConnectionFailure:
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(f"the database at {where(uri)} kept dropping the connection for "
                                          f"{seconds:.0f}s while the product started") from None
            log.warning("the database at %s dropped the connection while the product started; trying again",
                        where(uri))
            time.sleep(1.0)
