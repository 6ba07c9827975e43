"""``flask --app app create-admin EMAIL [--password PW] [--role admin|viewer]``."""
import click
from flask import Flask
from flask.cli import with_appcontext

from ..models.user import ROLES


def register(app: Flask) -> None:
    """Attach the create-admin command to the app."""
    app.cli.add_command(create_admin_command)


@click.command("create-admin")
@click.argument("email")
@click.option("--password", default=None, help="the password; prompted (hidden) when not given")
@click.option("--role", type=click.Choice(ROLES), default="admin", show_default=True,
              help="admin may act; viewer may only look")
@click.option("--update", is_flag=True, help="change the password and role of an existing user instead")
@with_appcontext
def create_admin_command(email, password, role, update):
    """Create a dashboard user (or change one with --update)."""
    from ..ops.actions import Actor, audit
    from .users import MIN_PASSWORD_LENGTH, UserError, create_user, update_user
    if password is None:
        password = click.prompt(f"Password (at least {MIN_PASSWORD_LENGTH} characters)", hide_input=True,
                                confirmation_prompt=True)
    try:
        user = (update_user if update else create_user)(email, password, role)
    except UserError as exc:
        hint = " (use --update to change it)" if str(exc).endswith("already exists") else ""
        raise click.ClickException(f"{exc}{hint}") from None
    audit(Actor("cli", "cli"), "update-user" if update else "create-user", target=f"{user.email} ({user.role})")
    click.echo(f"{'updated' if update else 'created'} {user.role} {user.email}; sign in at /login")
