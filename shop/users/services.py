"""The rules of accounts: registration, profile changes, passwords, logins."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shop.core.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from shop.extensions import db
from shop.users import tokens
from shop.users.models import Account, User
from shop.users.names import username_key


class BadCredentials(Unauthenticated):
    """Unknown username, wrong password, or an inactive account: one answer for all three."""


def check_password_rules(password: str, username: str, field: str = "password") -> None:
    """The rules a schema cannot state (the schema already refused one of digits only, as `\\d` means it)."""
    if password.casefold() == username.casefold():
        raise ValidationFailed("Invalid password.", {field: ["The password cannot be the username."]})


def register_user(data: dict[str, Any], *, role: str = "customer") -> User:
    """Create an account; a taken username or email (any case) is a 422, even under a race."""
    check_password_rules(data["password"], data["username"])
    _check_unique(username=data["username"], email=data["email"])
    user = User(
        username=data["username"],
        username_key=username_key(data["username"]),
        email=data["email"],
        first_name=data.get("first_name") or "",
        last_name=data.get("last_name") or "",
        phone_number=data.get("phone_number"),
    )
    set_role(user, role)
    user.set_password(data["password"])
    db.session.add(user)
    _commit_unique()
    return user


def update_profile(account: Account, changes: dict[str, Any]) -> User:
    user = _user_of(account)
    if "email" in changes:
        _check_unique(email=changes["email"], exclude_id=user.id)
    for name, value in changes.items():
        setattr(user, name, "" if value is None and name in {"first_name", "last_name"} else value)
    _commit_unique()
    return user


def change_password(account: Account, claims: dict[str, Any], old_password: str, new_password: str) -> None:
    """A new password; every other session of the user ends (a thief's included), the caller's goes on."""
    user = _user_of(account)
    if not user.check_password(old_password):
        raise ValidationFailed("Invalid password.", {"old_password": ["The current password is wrong."]})
    check_password_rules(new_password, user.username, field="new_password")
    user.set_password(new_password)
    db.session.commit()
    tokens.end_other_sessions(user.id, keep=claims)


def log_out_everywhere(account: Account) -> None:
    """End every session of the user, this one included."""
    user = _user_of(account)
    tokens.end_all_sessions(user)
    db.session.commit()


def get_user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


def manage_user(admin: Account, user_id: int, changes: dict[str, Any]) -> User:
    """An admin's change to an account: active or not, its role, its password; deactivating or a new password
    ends every session of it. An admin's own account is not changed here (no admin locks themselves out)."""
    user = get_user(user_id)
    if user.id == admin.id and changes:
        raise Conflict("An admin cannot change their own role, activity or password here; use /api/users/me/.")
    if "password" in changes:
        check_password_rules(changes["password"], user.username)
        user.set_password(changes["password"])
        tokens.end_all_sessions(user)
    if "is_active" in changes:
        if user.is_active and not changes["is_active"]:
            tokens.end_all_sessions(user)
        user.is_active = changes["is_active"]
    if "role" in changes:
        set_role(user, changes["role"])
    db.session.commit()
    return user


ROLES = ("customer", "staff", "admin")


def set_role(user: User, role: str) -> None:
    """customer; staff (catalog and orders); admin (staff who also manage users and see their personal data)."""
    user.is_staff = role in {"staff", "admin"}
    user.is_admin = role == "admin"


def role_of(user: User | Account) -> str:
    return "admin" if user.is_admin else "staff" if user.is_staff else "customer"


def authenticate(username: str, password: str) -> User:
    """The active user with these credentials; one answer for an unknown name and a wrong password."""
    user = db.session.scalar(select(User).where(User.username_key == username_key(username)))
    if user is None:
        User.check_no_password(password)
    elif user.check_password(password) and user.is_active:
        return user
    raise BadCredentials("No active account with these credentials.")


def _user_of(account: Account) -> User:
    """The signed-in user's model, for a write (requests authenticate with an `Account` row)."""
    user = db.session.get(User, account.id)
    if user is None:
        raise Unauthenticated("The token's user is not active.")
    return user


def _check_unique(*, username: str | None = None, email: str | None = None, exclude_id: int | None = None) -> None:
    errors: dict[str, list[str]] = {}
    if username is not None and db.session.scalar(select(User.id).where(User.username_key == username_key(username))):
        errors["username"] = ["This username is taken."]
    if email is not None:
        query = select(User.id).where(func.lower(User.email) == email.lower())
        if exclude_id is not None:
            query = query.where(User.id != exclude_id)
        if db.session.scalar(query):
            errors["email"] = ["This email is already registered."]
    if errors:
        raise ValidationFailed("Already registered.", errors)


def _commit_unique() -> None:
    """Commit; a unique violation from a concurrent writer becomes the same 422 as the pre-check."""
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        field = "email" if "email" in str(exc.orig).lower() else "username"  # username or username_key
        raise ValidationFailed("Already registered.", {field: [f"This {field} is already registered."]}) from exc
