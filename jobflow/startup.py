"""How every entry point starts: settings checked, the database reached, or one line per problem and an exit.

``python app.py``, every ``flask --app app`` command, ``wsgi.py`` and
``gunicorn.conf.py`` go through here, so a bad setting or an unreachable
database reads the same everywhere: one line each, every bad setting at once,
no traceback, no secret.
"""
from __future__ import annotations

import sys
from typing import NoReturn

from flask import Flask

from jobflow import create_app
from jobflow.config import ConfigError, load_settings
from jobflow.db import DatabaseUnavailable


def fail(problems: list[str], exit_code: int) -> NoReturn:
    """Print one line per problem to stderr and exit."""
    for problem in problems:
        print(f"jobflow: cannot start: {problem}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(exit_code)


def settings_or_exit(exit_code: int = 2) -> dict:
    """The settings from the environment, or exit naming every bad one."""
    try:
        return load_settings()
    except ConfigError as exc:
        fail(exc.problems, exit_code)


def build_app(exit_code: int = 2) -> Flask:
    """The app, or exit with ``exit_code`` after naming what stops it."""
    try:
        return create_app()
    except ConfigError as exc:
        fail(exc.problems, exit_code)
    except DatabaseUnavailable as exc:
        fail([str(exc)], exit_code)
