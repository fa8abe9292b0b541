"""`flask create-admin`: a staff account from the command line."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from shop.core.errors import ValidationFailed
from shop.users.schemas import RegistrationSchema
from shop.users.services import register_user


@click.command("create-admin")
@with_appcontext
@click.argument("username")
@click.option("--email", required=True, help="The admin's email address.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted when not given.")
def create_admin(username: str, email: str, password: str) -> None:
    """Create a staff user."""
    errors = RegistrationSchema().validate(
        {"username": username, "email": email, "password": password, "password2": password}
    )
    if errors:
        raise click.ClickException(f"Invalid admin: {errors}")
    try:
        user = register_user({"username": username, "email": email, "password": password}, is_staff=True)
    except ValidationFailed as exc:
        raise click.ClickException(f"{exc.message} {exc.errors or ''}".strip()) from exc
    click.echo(f"Created staff user {user.username} (id {user.id}).")
