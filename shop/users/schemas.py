"""What the users endpoints accept and answer."""

from __future__ import annotations

import unicodedata
from enum import StrEnum
from typing import Any

import marshmallow as ma
from marshmallow import fields

from shop.core.schemas import (
    DescribedRule,
    Email,
    Pattern,
    ResponseSchema,
    StrictSchema,
    Text,
    UTCDateTimeField,
    described,
)
from shop.users.models import PASSWORD_MAX_LENGTH, User
from shop.users.names import refuse_look_alike

# Each rule is a validator of its own (not one `And`), so the OpenAPI document states it; lengths are
# the columns' (`Text(column=…)`).
USERNAME = Pattern(r"^[\w.@+-]+$", error="Use letters, digits and @.+-_ only.")
ONE_SCRIPT = DescribedRule(
    refuse_look_alike, "Not a mix of scripts with look-alike characters (Unicode TR39), and unique whatever its case."
)
PHONE = Pattern(r"^\+?[0-9 ()-]{4,15}$", error="Not a phone number.")
# At least 8 characters, not all digits (the document states both; "not the username" it cannot).
PASSWORD = Pattern(r"^[\s\S]*\D[\s\S]*$", error="The password cannot be all digits.")


class Role(StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"
    ADMIN = "admin"


# A token the shop signs is a few hundred characters; anything far longer is not one of them.
TOKEN_MAX_LENGTH = 4096
# What a name holds: letters, combining marks, spaces, apostrophes, hyphens and dots.
NAME_PUNCTUATION = frozenset(" '-.")


def name_characters(value: str) -> None:
    """A person's name: letters and marks of any script, spaces, `'`, `-` and `.`; nothing else."""
    for char in value:
        if char not in NAME_PUNCTUATION and unicodedata.category(char)[0] not in "LM":
            raise ma.ValidationError("A name holds letters, spaces, apostrophes, hyphens and dots only.")


NAME = DescribedRule(name_characters, "Letters and marks of any script, spaces, apostrophes, hyphens and dots only.")


def Username(**kwargs: Any) -> Text:  # noqa: N802 - reads like a field class
    return Text(column=User.username, min_length=3, validate=[USERNAME, ONE_SCRIPT], **described(kwargs, ONE_SCRIPT))


def Name(**kwargs: Any) -> Text:  # noqa: N802 - reads like a field class
    return Text(column=User.first_name, validate=NAME, **described(kwargs, NAME))


def Password(**kwargs: Any) -> Text:  # noqa: N802 - reads like a field class
    return Text(min_length=8, max_length=PASSWORD_MAX_LENGTH, validate=PASSWORD, load_only=True, **kwargs)


def Phone(**kwargs: Any) -> Text:  # noqa: N802 - reads like a field class
    return Text(column=User.phone_number, validate=PHONE, **kwargs)


class UserSchema(ResponseSchema):
    """An account as its owner sees it."""

    id = fields.Integer()
    username = fields.String()
    email = fields.Email()
    first_name = fields.String()
    last_name = fields.String()
    phone_number = fields.String(allow_none=True)


class StaffUserSchema(ResponseSchema):
    """An account as staff see it in the list: no email or phone number (an admin reads them one by one)."""

    id = fields.Integer()
    username = fields.String()
    first_name = fields.String()
    last_name = fields.String()
    is_staff = fields.Boolean()
    is_active = fields.Boolean()
    date_joined = UTCDateTimeField()


class AdminUserSchema(UserSchema):
    """An account as an admin sees and manages it."""

    is_staff = fields.Boolean()
    is_active = fields.Boolean()
    date_joined = UTCDateTimeField()
    role = fields.Function(
        lambda user: "admin" if user.is_admin else "staff" if user.is_staff else "customer",
        metadata={"type": "string", "enum": ["customer", "staff", "admin"]},
    )


class ManageUserSchema(StrictSchema):
    """An admin's change to an account; a new password or deactivation ends every session of it."""

    role = fields.Enum(
        Role, by_value=True, metadata={"description": "customer, staff, or admin (staff who manage users)."}
    )
    is_active = fields.Boolean(truthy={True}, falsy={False})
    password = Password()


def typed_twice(first: str, second: str) -> Any:
    """A schema check that a password typed twice is the same both times."""

    @ma.validates_schema
    def check(self: ma.Schema, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get(first) != data.get(second):
            raise ma.ValidationError("The two passwords differ.", second)

    return check


class RegistrationSchema(StrictSchema):
    """A new account. The password: not the username, and typed the same twice."""

    username = Username(required=True)
    email = Email(column=User.email, required=True)
    first_name = Name(load_default="")
    last_name = Name(load_default="")
    phone_number = Phone(load_default=None, allow_none=True)
    password = Password(required=True)
    password2 = Text(
        required=True, load_only=True, max_length=PASSWORD_MAX_LENGTH, metadata={"description": "The password again."}
    )

    passwords_match = typed_twice("password", "password2")


REGISTRATION_EXAMPLE = {
    "username": "john_doe",
    "email": "john@example.com",
    "password": "securepassword123",
    "password2": "securepassword123",
    "first_name": "John",
    "last_name": "Doe",
    "phone_number": "+1 555 0100",
}


class ProfileUpdateSchema(StrictSchema):
    """The profile fields to change; what is absent stays as it is."""

    email = Email(column=User.email)
    first_name = Name()
    last_name = Name()
    phone_number = Phone(allow_none=True)


PROFILE_EXAMPLE = {"first_name": "Johnny", "phone_number": None}


MANAGE_USER_EXAMPLE = {"role": "staff", "is_active": True}


class PasswordChangeSchema(StrictSchema):
    """The current password, and the new one typed twice (not the username)."""

    old_password = Text(required=True, load_only=True, max_length=PASSWORD_MAX_LENGTH)
    new_password = Password(required=True)
    new_password2 = Text(
        required=True,
        load_only=True,
        max_length=PASSWORD_MAX_LENGTH,
        metadata={"description": "The new password again."},
    )

    passwords_match = typed_twice("new_password", "new_password2")


PASSWORD_CHANGE_EXAMPLE = {
    "old_password": "securepassword123",
    "new_password": "an0ther-long-secret",
    "new_password2": "an0ther-long-secret",
}


class CredentialsSchema(StrictSchema):
    username = Text(required=True, min_length=1, column=User.username)
    password = Text(required=True, load_only=True, min_length=1, max_length=PASSWORD_MAX_LENGTH)


CREDENTIALS_EXAMPLE = {"username": "john_doe", "password": "securepassword123"}


class TokenPairSchema(ResponseSchema):
    access = fields.String(metadata={"description": "Access token (JWT): send it as `Authorization: Bearer …`."})
    refresh = fields.String(metadata={"description": "Refresh token (JWT): spent by `POST /api/token/refresh/`."})


class RefreshSchema(StrictSchema):
    refresh = Text(
        required=True, max_length=TOKEN_MAX_LENGTH, metadata={"description": "The refresh token of the last pair."}
    )


REFRESH_EXAMPLE = {"refresh": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"}


class RevokeSchema(StrictSchema):
    refresh = Text(max_length=TOKEN_MAX_LENGTH, metadata={"description": "A refresh token whose session ends as well."})


REVOKE_EXAMPLE = REFRESH_EXAMPLE
