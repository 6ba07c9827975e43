"""The product's ``flask --app app`` commands (``app.py`` adds the dev command ``benchmark`` from ``benchmarks/``)."""
from __future__ import annotations

import os
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext

from jobflow.cli.audit import audited, record
from jobflow.models.user import ROLES

ADMIN_PASSWORD_ENV = "JOBFLOW_ADMIN_PASSWORD"


def register(app: Flask) -> None:
    """Attach every command to the app."""
    for command in (create_admin_command, import_jobs_command, load_demo_command, worker_command, recompute_all_command,
                    retry_failed_command, clear_old_queue_command, env_example_command,
                    migrate_embeddings_command, test_embeddings_command, rollback_command,
                    check_alerts_command):
        app.cli.add_command(command)


def _refuse_password_argument(ctx, param, value):
    if value is not None:
        raise click.ClickException(f"--password is not accepted: every user of this machine can read a command's "
                                   f"arguments (ps). Type the password at the prompt, or give it on standard input "
                                   f"with --password-stdin, or in {ADMIN_PASSWORD_ENV}")


@click.command("create-admin")
@click.argument("email")
@click.option("--password", default=None, hidden=True, expose_value=False, is_eager=True,
              callback=_refuse_password_argument)
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of standard input")
@click.option("--role", type=click.Choice(ROLES), default="admin", show_default=True,
              help="admin may act; viewer may only look")
@click.option("--update", is_flag=True, help="change the password and role of an existing user instead")
@with_appcontext
@audited("create-user")
def create_admin_command(email, password_stdin, role, update):
    """Create a dashboard user (or change one with --update).

    The password is typed at a hidden prompt, or read from standard input (--password-stdin) or from the
    environment variable JOBFLOW_ADMIN_PASSWORD; never from the command line, which other users can see.
    It needs at least 12 characters and must not be easy to guess.
    """
    from jobflow.ops.users import UserError, create_user, update_user
    record(action="update-user" if update else "create-user", target=f"{email} ({role})")
    password = _admin_password(password_stdin)
    try:
        user = (update_user if update else create_user)(email, password, role)
    except UserError as exc:
        hint = " (use --update to change it)" if str(exc).endswith("already exists") else ""
        raise click.ClickException(f"{exc}{hint}") from None
    record(target=f"{user.email} ({user.role})", count=1)
    click.echo(f"{'updated' if update else 'created'} {user.role} {user.email}; sign in at /login")


def _admin_password(from_stdin: bool) -> str:
    """The new password: standard input's first line, else the environment, else a hidden prompt (twice)."""
    from jobflow.ops.users import MIN_PASSWORD_LENGTH
    if from_stdin:
        line = click.get_text_stream("stdin").readline().rstrip("\r\n")
        if not line:
            raise click.ClickException("--password-stdin: standard input held no password")
        return line
    if os.environ.get(ADMIN_PASSWORD_ENV):
        return os.environ[ADMIN_PASSWORD_ENV]
    return click.prompt(f"Password (at least {MIN_PASSWORD_LENGTH} characters, not a common one)", hide_input=True,
                        confirmation_prompt=True)


@click.command("import-jobs")
@click.argument("path", type=click.Path(path_type=Path))
@audited("import-jobs")
def import_jobs_command(path: Path):
    """Import job postings from a CSV or JSON-lines file and queue their embeddings."""
    from jobflow.ops.importer import ImportFileError, count_rows, import_jobs
    try:
        total = count_rows(path)
        with click.progressbar(length=total, label=f"Importing {path.name}", file=click.get_text_stream("stderr"),
                               show_pos=True) as bar:
            report = import_jobs(path, progress=bar.update)
    except ImportFileError as exc:
        raise click.ClickException(f"cannot import {path}: {exc}") from None
    _record_report(report)
    _print_report(report)


def _record_report(report) -> None:
    record(count=report.imported, skipped=report.skipped, invalid=report.invalid, queued=report.queued)


def _print_report(report) -> None:
    click.echo(f"imported: {report.imported}  skipped: {report.skipped}  invalid: {report.invalid}  "
               f"queued for embedding: {report.queued}")
    if report.adjusted:
        click.echo(f"  {report.adjusted} titles were missing or overlong and were taken from the posting's first line")
    shown = report.reasons[:20]
    for reason in shown:
        click.echo(f"  {reason}")
    if len(report.reasons) > len(shown):
        click.echo(f"  ... and {len(report.reasons) - len(shown)} more")


@click.command("load-demo")
@audited("load-demo")
def load_demo_command():
    """Import the bundled demo postings (skips those already imported)."""
    from jobflow.ops.importer import load_demo_data
    report = load_demo_data()
    _record_report(report)
    _print_report(report)


@click.command("worker")
@with_appcontext
def worker_command():
    """Run the embedding worker in this process until SIGTERM or Ctrl+C (production layout)."""
    from flask import current_app

    from jobflow.logs import setup_logging
    from jobflow.worker.loop import run_worker_process
    from jobflow.worker.threads import exit_process
    setup_logging(current_app.config)
    # The app itself, not the request-local proxy: the scheduler's threads push its context for alert emails.
    exit_process(run_worker_process(current_app._get_current_object()))


@click.command("recompute-all")
@with_appcontext
@audited("recompute-all")
def recompute_all_command():
    """Recompute every similar-jobs list now, in this process, with progress."""
    from flask import current_app

    from jobflow.embeddings import min_score, provider_model
    from jobflow.similarity.lists import SimilarLists
    settings = current_app.config
    lists = SimilarLists(None, settings["SIMILARITY_TOP_N"], min_score(settings), provider_model(settings),
                         settings["EMBEDDING_BATCH_SIZE"], language_balance=settings["SIMILARITY_LANGUAGE_BALANCE"],
                         raw_min_score=min_score(settings, raw=True))
    click.echo(f"loading embeddings of model {lists.model}...")
    loaded = lists.load()
    if not loaded:
        click.echo("no embedded active jobs: nothing to recompute")
        return
    with click.progressbar(length=loaded, label="Recomputing lists", file=click.get_text_stream("stderr"),
                           show_pos=True) as bar:
        state = {"done": 0}

        def progress(done, total):
            bar.update(done - state["done"])
            state["done"] = done
        count = lists.refit_and_recompute(progress)
    record(count=count)
    corrected = f", language correction version {lists.correction.version}" if lists.correction.active else ""
    click.echo(f"recomputed {count} lists (top {lists.top_n}, minimum score {lists.min_score}{corrected})")


@click.command("retry-failed")
@with_appcontext
@audited("retry-failed")
def retry_failed_command():
    """Put every failed queue item back to pending with fresh attempts."""
    from jobflow.jobs import queue
    count = queue.retry_failed()
    record(count=count)
    click.echo(f"{count} failed items are pending again")


@click.command("clear-old-queue")
@click.option("--days", type=click.IntRange(min=0), default=None, help="age in days (default QUEUE_CLEANUP_DAYS)")
@with_appcontext
@audited("clear-old-queue")
def clear_old_queue_command(days):
    """Delete finished queue items older than QUEUE_CLEANUP_DAYS."""
    from flask import current_app

    from jobflow.jobs import queue
    days = current_app.config["QUEUE_CLEANUP_DAYS"] if days is None else days
    count = queue.clear_old(days)
    record(count=count, target=f"--days {days}")
    click.echo(f"deleted {count} finished items older than {days} days")


@click.command("env-example")
def env_example_command():
    """Print .env.example: every setting with its default and a comment."""
    from jobflow.config import env_example
    click.echo(env_example(), nl=False)


MIGRATION_COUNTDOWN_SECONDS = 5


@click.command("migrate-embeddings")
@click.option("--dry-run", is_flag=True, envvar="DRY_RUN", show_envvar=True,
              help="count and report; change nothing (DRY_RUN=true does the same)")
@click.option("--yes", "-y", is_flag=True, help="start at once: no countdown on a terminal")
@with_appcontext
@audited("migrate-embeddings")
def migrate_embeddings_command(dry_run, yes):
    """Queue embeddings for every active job without a current one (new model = re-embed)."""
    from flask import current_app

    from jobflow.embeddings import provider_model
    from jobflow.ops import migration
    model = provider_model(current_app.config)
    click.echo(f"Embedding migration ({'dry run: nothing will change' if dry_run else 'will queue jobs'})")
    from jobflow.embeddings.text import RECIPE
    click.echo(f"model: {model}, recipe: {RECIPE}")
    found = migration.plan(model)
    rows = [("jobs in database", found.total), ("active jobs", found.active),
            ("  with a current embedding", found.current), ("  never embedded", found.never_embedded),
            ("  failed before", found.failed), ("  embedded by another model", found.other_model),
            ("  made by an earlier recipe", found.older_recipe),
            ("  text changed since", found.text_changed), ("  cannot be used (see the overview)", found.cannot_be_used),
            ("  already in the queue", found.already_queued),
            ("to queue now", len(found.to_queue))]
    for label, value in rows:
        click.echo(f"{label + ':':<30}{value:>8}")
    if dry_run or not found.to_queue:
        click.echo(f"dry run: would queue {len(found.to_queue)} jobs; nothing changed "
                   "(run without --dry-run or DRY_RUN to queue them)" if dry_run else "nothing to queue")
        return
    if not yes and _on_terminal():
        _countdown(f"Queueing {len(found.to_queue)} jobs; make sure a worker is running. Ctrl+C to cancel",
                   MIGRATION_COUNTDOWN_SECONDS)
    try:
        with click.progressbar(length=len(found.to_queue), label="Queueing", show_pos=True,
                               file=click.get_text_stream("stderr")) as bar:
            migration_id, queued = migration.run(found, bar.update)
    except Exception as exc:
        raise click.ClickException(f"migration stopped: {exc}") from None
    record(count=queued, migrationId=str(migration_id))
    click.echo(f"migration {migration_id}: queued {queued} jobs at back-fill priority "
               f"(live edits go first); the worker embeds them")


def _on_terminal() -> bool:
    import sys
    return sys.stdin.isatty() and sys.stdout.isatty()


def _countdown(message: str, seconds: int) -> None:
    """Say what is about to happen and wait ``seconds`` (Ctrl+C cancels with exit code 1, nothing changed)."""
    import time
    click.echo(message)
    try:
        for left in range(seconds, 0, -1):
            click.echo(f"  starting in {left}...")
            time.sleep(1)
    except KeyboardInterrupt:
        click.echo("cancelled: nothing changed")
        raise SystemExit(1) from None


@click.command("test-embeddings")
@with_appcontext
def test_embeddings_command():
    """Run the eight checks of the embedding system; exit 1 if any fails."""
    from flask import current_app

    from jobflow.ops.provider_check import placeholder_key_problem, run_checks
    problem = placeholder_key_problem(current_app.config)
    if problem:
        raise click.ClickException(f"{problem}; nothing was sent to the provider")
    if not run_checks(dict(current_app.config), click.echo):
        raise SystemExit(1)
    click.echo("all checks passed")


@click.command("rollback")
@click.option("--level", "level_", type=click.IntRange(1, 3), help="1 disable the worker, 2 also revert the code, "
              "3 also remove embedding data")
@click.option("--dry-run", is_flag=True, help="show what the level would do and the counts; change nothing")
@click.option("--reenable", is_flag=True, help="lift a level 1 or 2 rollback: workers claim again, lists are served")
@click.option("--confirm", "confirmation", default=None, help="for level 3 without a prompt: the database name")
@with_appcontext
@audited("rollback")
def rollback_command(level_, dry_run, reenable, confirmation):
    """Roll the embedding system back (the runbook's three levels)."""
    from jobflow.db import get_db
    from jobflow.jobs import rollback
    if reenable:
        rollback.set_level(0)
        click.echo("rollback lifted: workers claim again and similar-jobs lists are served")
        return
    if level_ is None:
        raise click.UsageError("give --level 1, 2 or 3 (or --reenable)")
    data = rollback.counts()
    click.echo(f"in force now: level {rollback.level(fresh=True)}")
    click.echo(f"jobs with an embedding: {data.jobs_with_embedding}; with a similar list: {data.jobs_with_lists}; "
               f"queue items: {data.queue_items}; worker statuses: {data.worker_statuses}")
    steps = ["workers stop claiming (state stopped); the API serves the category/location fallback"]
    if level_ >= 2:
        steps.append("then deploy the previous release: git checkout <previous tag> && make install, restart "
                     "jobflow-web (data stays and is ignored)")
    if level_ == 3:
        steps.append(f"remove embedding, similarJobs and similarityMetadata from {data.jobs_with_embedding} jobs; "
                     f"drop jobqueues ({data.queue_items} items) and workerstatuses ({data.worker_statuses})")
    for number, step in enumerate(steps, start=1):
        click.echo(f"  {number}. {step}")
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    if level_ == 3:
        name = get_db().name
        typed = confirmation if confirmation is not None else click.prompt(
            f"This deletes embedding data. Type the database name ({name}) to go on", default="", show_default=False)
        if typed != name:
            raise click.ClickException(f"confirmation {typed!r} does not match the database name: nothing changed")
    rollback.set_level(level_)
    click.echo(f"level {level_} in force: workers stop claiming within seconds")
    if level_ == 3:
        removed = rollback.remove_embedding_data()
        record(count=removed.jobs_with_embedding, queueItems=removed.queue_items,
                workerStatuses=removed.worker_statuses)
        click.echo(f"removed embedding data from {removed.jobs_with_embedding} jobs; dropped {removed.queue_items} "
                   f"queue items and {removed.worker_statuses} worker statuses")
        click.echo("to start again later: flask --app app rollback --reenable && flask --app app migrate-embeddings")
    elif level_ == 2:
        click.echo("now deploy the previous release (step 2); lift with: flask --app app rollback --reenable")
    else:
        click.echo("also set EMBEDDING_WORKER_ENABLED=false and stop the worker service "
                   "(systemctl stop jobflow-worker); lift with: flask --app app rollback --reenable")


@click.command("check-alerts")
@with_appcontext
def check_alerts_command():
    """Evaluate the alert rules once and send the emails that are due (for cron, beside the workers' own checks)."""
    from flask import current_app

    from jobflow.alerts import check_alerts
    report = check_alerts(current_app._get_current_object())
    click.echo(f"open: {', '.join(report.open) or 'none'}; opened: {len(report.opened)}; "
               f"resolved: {len(report.resolved)}; emails sent: {len(report.sent)}; not sent: {len(report.failed)}")
    for key, kind, reason in report.failed:
        click.echo(f"  {kind} email for {key} not sent: {reason}")

