"""`flask create-admin` and `flask set-role`: accounts with rights, from the command line."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from shop.core.errors import ValidationFailed
from shop.extensions import db
from shop.users import tokens
from shop.users.models import User
from shop.users.names import username_key
from shop.users.schemas import RegistrationSchema
from shop.users.services import ROLES, register_user, set_role


@click.command("create-admin")
@with_appcontext
@click.argument("username")
@click.option("--email", required=True, help="The admin's email address.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted when not given.")
def create_admin(username: str, email: str, password: str) -> None:
    """Create an admin: a staff user who also manages users (`set-role` for other roles)."""
    errors = RegistrationSchema().validate(
        {"username": username, "email": email, "password": password, "password2": password}
    )
    if errors:
        raise click.ClickException(f"Invalid admin: {errors}")
    try:
        user = register_user({"username": username, "email": email, "password": password}, role="admin")
    except ValidationFailed as exc:
        raise click.ClickException(f"{exc.message} {exc.errors or ''}".strip()) from exc
    click.echo(f"Created admin {user.username} (id {user.id}).")


@click.command("set-role")
@with_appcontext
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
def set_role_command(username: str, role: str) -> None:
    """Make a user a customer, staff (catalog and orders) or admin (also users); their sessions end."""
    user = db.session.scalar(select(User).where(User.username_key == username_key(username)))
    if user is None:
        raise click.ClickException(f"No user {username!r}.")
    set_role(user, role)
    tokens.end_all_sessions(user)  # tokens carry no role, but a changed right is a reason to sign in again
    db.session.commit()
    click.echo(f"{user.username} is now {role}.")
