"""How every entry point starts: settings checked, the database reached, or one line per problem and an exit.

``python app.py``, every ``flask --app app`` command, ``wsgi.py`` and
``gunicorn.conf.py`` go through here, so a bad setting or an unreachable
database reads the same everywhere: one line each, every bad setting at once,
no traceback, no secret. Each of them also makes a ``.env`` that other users could read private first.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from flask import Flask

from jobflow import PROJECT_ROOT, create_app
from jobflow.config import ConfigError, load_settings
from jobflow.db import DatabaseUnavailable, make_private

ENV_FILE = PROJECT_ROOT / ".env"


def fail(problems: list[str], exit_code: int) -> NoReturn:
    """Print one line per problem to stderr and exit."""
    for problem in problems:
        print(f"jobflow: cannot start: {problem}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(exit_code)


def private_env_file(path: Path = ENV_FILE, exit_code: int = 2) -> None:
    """Make ``.env`` mode 600 when group or others may read it (it holds the secret key, the API token, the
    mail password), with one line saying so; exit with the ``chmod`` to run when its mode cannot be changed.

    The same rule as for the secret files in ``instance/``. ``cp .env.example .env`` makes a file others can
    read; a warning alone would leave the secrets readable until someone acts.
    """
    try:
        if os.stat(path).st_mode & 0o077 == 0:
            return
        changed = make_private(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        fail([f"{path} is readable by other users and its mode cannot be changed ({exc.strerror}); "
              f"run: chmod 600 {path}"], exit_code)
    if changed:
        print(f"jobflow: warning: {path} was readable by other users: changed its mode to 600", file=sys.stderr)
        sys.stderr.flush()


def settings_or_exit(exit_code: int = 2) -> dict:
    """The settings from the environment (``.env`` made private first), or exit naming every bad one."""
    private_env_file(exit_code=exit_code)
    try:
        return load_settings()
    except ConfigError as exc:
        fail(exc.problems, exit_code)


def build_app(exit_code: int = 2) -> Flask:
    """The app (``.env`` made private first), or exit with ``exit_code`` after naming what stops it."""
    private_env_file(exit_code=exit_code)
    try:
        return create_app()
    except ConfigError as exc:
        fail(exc.problems, exit_code)
    except DatabaseUnavailable as exc:
        fail([str(exc)], exit_code)
