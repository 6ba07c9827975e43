"""The audit entry of every state-changing command: who ran it (OS user, host), with what, and how it ended."""
from __future__ import annotations

import functools
import os
import sys

import click


def audited(action: str):
    """One audit entry per run of a state-changing command, also when it fails or is cancelled.

    It names the OS user and the host, the command's arguments (never a password) and its result: the
    count the command ``record``s, ok or failed with the error. A dry run changes nothing and is not written.
    """
    def wrap(command):
        @functools.wraps(command)
        def run(**params):
            if params.get("dry_run"):
                return command(**params)
            ctx = click.get_current_context()
            ctx.meta["jobflow.audit"] = {"action": action}
            try:
                outcome = command(**params)
            except BaseException as exc:
                _write_audit(ctx, _failure(exc))
                raise
            _write_audit(ctx, None)
            return outcome
        return run
    return wrap


def record(**facts) -> None:
    """What the running command did, for its audit entry: ``count``, ``target``, ``action`` or more detail."""
    click.get_current_context().meta["jobflow.audit"].update(facts)


def _failure(exc: BaseException) -> str | None:
    if isinstance(exc, SystemExit):
        return None if exc.code in (0, None) else f"ended with exit code {exc.code}"
    if isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
        return "cancelled"
    if isinstance(exc, click.ClickException):
        return exc.format_message()
    from jobflow.logs import brief
    return f"{type(exc).__name__}: {brief(exc)}"


def _arguments(ctx: click.Context) -> dict:
    """The command's arguments as given or defaulted, by their option names; never a password."""
    shown = {}
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value is False or "password" in (param.name or "") and not isinstance(value, bool):
            continue
        name = param.opts[0] if isinstance(param, click.Option) else param.name
        shown[name] = value if isinstance(value, (bool, int)) else str(value)
    return shown


def _write_audit(ctx: click.Context, error: str | None) -> None:
    """The audit entry of a command run; a database that refuses it costs a warning, never the result."""
    from jobflow.ops.actions import audit, cli_actor
    if error:
        error = _redacted(error)
    facts = dict(ctx.meta["jobflow.audit"])
    actor, arguments = cli_actor(), _arguments(ctx)
    given = " ".join(k if v is True else f"{k} {v}" if k.startswith("-") else str(v) for k, v in arguments.items())
    target = facts.pop("target", given)
    if error:
        target = f"{target}: failed: {error}" if target else f"failed: {error}"
    sudo = os.environ.get("SUDO_USER")
    try:
        audit(actor, facts.pop("action"), target, facts.pop("count", 0), host=actor.ip, arguments=arguments,
              result="failed" if error else "ok", **({"error": error} if error else {}),
              **({"sudoUser": sudo} if sudo else {}), **facts)
    except Exception as exc:
        from jobflow.logs import brief
        print(f"jobflow: warning: the audit entry of this command was not written: {brief(exc)}", file=sys.stderr)


def _redacted(text: str) -> str:
    """The text without the configured secrets, a URI's password or anything shaped like an API key."""
    from flask import current_app, has_app_context

    from jobflow.logs import RedactSecrets, secret_values
    return RedactSecrets(secret_values(current_app.config) if has_app_context() else ()).redact(text)
