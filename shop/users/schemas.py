"""What the users endpoints accept and answer."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from shop.core.schemas import StrictSchema, UTCDateTimeField

USERNAME = validate.And(
    validate.Length(min=3, max=150),
    validate.Regexp(r"^[\w.@+-]+\Z", error="Use letters, digits and @.+-_ only."),
)
PHONE = validate.Regexp(r"^\+?[0-9 ()-]{4,15}\Z", error="Not a phone number.")
EMAIL_LENGTH = validate.Length(max=254)
PASSWORD = validate.Length(min=8, max=128)


class UserSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    username = fields.String(required=True, validate=USERNAME)
    email = fields.Email(required=True, validate=EMAIL_LENGTH)
    first_name = fields.String(load_default="", validate=validate.Length(max=150))
    last_name = fields.String(load_default="", validate=validate.Length(max=150))
    phone_number = fields.String(load_default=None, allow_none=True, validate=PHONE)


def typed_twice(first: str, second: str) -> Any:
    """A schema check that a password typed twice is the same both times."""

    @ma.validates_schema
    def check(self: ma.Schema, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get(first) != data.get(second):
            raise ma.ValidationError("The two passwords differ.", second)

    return check


class RegistrationSchema(UserSchema):
    password = fields.String(required=True, load_only=True, validate=PASSWORD)
    password2 = fields.String(required=True, load_only=True)

    passwords_match = typed_twice("password", "password2")


class ProfileUpdateSchema(StrictSchema):
    email = fields.Email(validate=EMAIL_LENGTH)
    first_name = fields.String(validate=validate.Length(max=150))
    last_name = fields.String(validate=validate.Length(max=150))
    phone_number = fields.String(allow_none=True, validate=PHONE)


class StaffUserSchema(UserSchema):
    """A user as staff see it in the list."""

    is_staff = fields.Boolean(dump_only=True)
    is_active = fields.Boolean(dump_only=True)
    date_joined = UTCDateTimeField(dump_only=True)


class PasswordChangeSchema(StrictSchema):
    old_password = fields.String(required=True, load_only=True)
    new_password = fields.String(required=True, load_only=True, validate=PASSWORD)
    new_password2 = fields.String(required=True, load_only=True)

    passwords_match = typed_twice("new_password", "new_password2")


class CredentialsSchema(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=150))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=128))


class TokenPairSchema(ma.Schema):
    access = fields.String(required=True)
    refresh = fields.String(required=True)


class RefreshSchema(StrictSchema):
    refresh = fields.String(required=True)


class RevokeSchema(StrictSchema):
    refresh = fields.String()
