"""The shop's user account and its revoked tokens."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from flask import current_app
from sqlalchemy import Boolean, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from shop.core.time import utcnow
from shop.core.types import UTCDateTime
from shop.extensions import db


@lru_cache
def _dummy_hash(method: str) -> str:
    """A hash of a random password, checked when a login names no user, so both paths cost the same."""
    return generate_password_hash("not-a-real-password-3f1b9c", method=method)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(150), default="")
    last_name: Mapped[str] = mapped_column(String(150), default="")
    phone_number: Mapped[str | None] = mapped_column(String(15))
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    date_joined: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

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
    is_active: bool
    date_joined: datetime


# Email is unique whatever its case; the database enforces it, so concurrent sign-ups cannot both win.
Index("uq_users_email_lower", func.lower(User.email), unique=True)


class RevokedToken(db.Model):
    """A token that may not be used again: logged out, or a refresh token already spent."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
