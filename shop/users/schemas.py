"""What the users endpoints accept and answer."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from shop.core.schemas import Pattern, ResponseSchema, StrictSchema, UTCDateTimeField

# Each rule is a validator of its own (not one `And`), so the OpenAPI document states it.
USERNAME = [
    validate.Length(min=3, max=150),
    Pattern(r"^[\w.@+-]+$", error="Use letters, digits and @.+-_ only."),
]
# The column holds 15 characters, a leading + included.
PHONE = [validate.Length(max=15), Pattern(r"^\+?[0-9 ()-]{4,15}$", error="Not a phone number.")]
EMAIL_LENGTH = validate.Length(max=254)
NAME_LENGTH = validate.Length(max=150)
# At least 8 characters, not all digits (the document states both; "not the username" it cannot).
PASSWORD = [
    validate.Length(min=8, max=128),
    Pattern(r"^[\s\S]*\D[\s\S]*$", error="The password cannot be all digits."),
]


class UserSchema(ResponseSchema):
    """An account as its owner sees it."""

    id = fields.Integer()
    username = fields.String()
    email = fields.Email()
    first_name = fields.String()
    last_name = fields.String()
    phone_number = fields.String(allow_none=True)


class StaffUserSchema(UserSchema):
    """An account as staff see it in the list."""

    is_staff = fields.Boolean()
    is_active = fields.Boolean()
    date_joined = UTCDateTimeField()


def typed_twice(first: str, second: str) -> Any:
    """A schema check that a password typed twice is the same both times."""

    @ma.validates_schema
    def check(self: ma.Schema, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get(first) != data.get(second):
            raise ma.ValidationError("The two passwords differ.", second)

    return check


class RegistrationSchema(StrictSchema):
    """A new account. The password: not the username, and typed the same twice."""

    username = fields.String(required=True, validate=USERNAME)
    email = fields.Email(required=True, validate=EMAIL_LENGTH)
    first_name = fields.String(load_default="", validate=NAME_LENGTH)
    last_name = fields.String(load_default="", validate=NAME_LENGTH)
    phone_number = fields.String(load_default=None, allow_none=True, validate=PHONE)
    password = fields.String(required=True, load_only=True, validate=PASSWORD)
    password2 = fields.String(required=True, load_only=True, metadata={"description": "The password again."})

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

    email = fields.Email(validate=EMAIL_LENGTH)
    first_name = fields.String(validate=NAME_LENGTH)
    last_name = fields.String(validate=NAME_LENGTH)
    phone_number = fields.String(allow_none=True, validate=PHONE)


PROFILE_EXAMPLE = {"first_name": "Johnny", "phone_number": None}


class PasswordChangeSchema(StrictSchema):
    """The current password, and the new one typed twice (not the username)."""

    old_password = fields.String(required=True, load_only=True)
    new_password = fields.String(required=True, load_only=True, validate=PASSWORD)
    new_password2 = fields.String(required=True, load_only=True, metadata={"description": "The new password again."})

    passwords_match = typed_twice("new_password", "new_password2")


PASSWORD_CHANGE_EXAMPLE = {
    "old_password": "securepassword123",
    "new_password": "an0ther-long-secret",
    "new_password2": "an0ther-long-secret",
}


class CredentialsSchema(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=150))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=128))


CREDENTIALS_EXAMPLE = {"username": "john_doe", "password": "securepassword123"}


class TokenPairSchema(ResponseSchema):
    access = fields.String(metadata={"description": "Access token (JWT): send it as `Authorization: Bearer …`."})
    refresh = fields.String(metadata={"description": "Refresh token (JWT): spent by `POST /api/token/refresh/`."})


class RefreshSchema(StrictSchema):
    refresh = fields.String(required=True, metadata={"description": "The refresh token of the last pair."})


REFRESH_EXAMPLE = {"refresh": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"}


class RevokeSchema(StrictSchema):
    refresh = fields.String(metadata={"description": "A refresh token to revoke as well."})


REVOKE_EXAMPLE = REFRESH_EXAMPLE
