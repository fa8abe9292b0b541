"""The shop's user account and its sessions."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import Boolean, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from shop.core.time import utcnow
from shop.core.types import UTCDateTime
from shop.extensions import db
from shop.users.names import username_key

# Passwords are at most this long: each costs a slow hash.
PASSWORD_MAX_LENGTH = 128


@lru_cache
def _dummy_hash(method: str) -> str:
    """A hash of a random password, checked when a login names no user, so both paths cost the same."""
    return generate_password_hash("not-a-real-password-3f1b9c", method=method)


def _key_of_username(context: Any) -> str:
    return username_key(context.get_current_parameters()["username"])


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    # The username as people read it (shop.users.names.username_key): unique, so `Alice` and its fullwidth form
    # cannot register beside `alice`.
    username_key: Mapped[str] = mapped_column(String(150), unique=True, default=_key_of_username)
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(150), default="")
    last_name: Mapped[str] = mapped_column(String(150), default="")
    phone_number: Mapped[str | None] = mapped_column(String(15))
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False)
    # Admins are staff who also manage users and read their personal data.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    date_joined: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Every token issued until then is refused (log out everywhere, a reset by an admin, deactivation):
    # read with the user on each token check, so it costs no round trip of its own.
    tokens_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @staticmethod
    def check_no_password(password: str) -> bool:
        """Spend the time of a password check when there is no user, and fail."""
        check_password_hash(_dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        return False

    def __repr__(self) -> str:
        return f"<User {self.username}>"


class Account(NamedTuple):
    """The signed-in user as a request sees it (`current_user`): the profile, never the password hash."""

    id: int
    username: str
    email: str
    first_name: str
    last_name: str
    phone_number: str | None
    is_staff: bool
    is_admin: bool
    is_active: bool
    date_joined: datetime
    tokens_valid_after: datetime | None


# Email is unique whatever its case; the database enforces it, so concurrent sign-ups cannot both win.
Index("uq_users_email_lower", func.lower(User.email), unique=True)


class UserSession(db.Model):
    """A sign-in and the refresh tokens rotated from it (one family): ended, every token of it is refused.

    One row a sign-in, not one per refresh: `refresh_jti` names the one refresh token of the family
    that may still be spent; presenting any other of its refresh tokens is reuse and ends the session.
    """

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    refresh_jti: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The absolute end (SESSION_MAX_DAYS after sign-in): no refresh outlives it.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
