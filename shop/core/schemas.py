"""Field types and base schemas shared by the blueprints."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

# The largest id a 32-bit integer column holds; larger ids are a 422, not a database error.
MAX_ID = 2**31 - 1


class StrictSchema(ma.Schema):
    """A request body: unknown and read-only fields are refused (422)."""

    class Meta:
        unknown = ma.RAISE


class ResponseSchema(ma.Schema):
    """A response body: every field is always present, and documented so (`required`, `readOnly`).

    A field that may be null says so with `allow_none=True` (documented `nullable`).
    """

    class Meta:
        always_present = True  # read by the OpenAPI document's plugin (shop.infra.api.DocumentedResponses)


class Pattern(validate.Regexp):
    """A regular expression the whole value must match: what JSON Schema's `pattern` of `^…$` means.

    marshmallow's Regexp searches from the start and lets `$` match before a final newline (Python's
    `re`); the document's pattern is read as ECMA-262, where `$` is the end. Matching the whole value
    makes the two agree, so a pattern is written once, in the syntax both share.
    """

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


def Id(**kwargs: Any) -> fields.Integer:  # noqa: N802 - reads like a field class
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID), **kwargs)


class TextEnum(fields.Enum):
    """An enum by its values, dumped from a column that holds the value as text."""

    def __init__(self, enum: Any, **kwargs: Any) -> None:
        super().__init__(enum, by_value=True, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return super()._serialize(None if value is None else self.enum(value), attr, obj, **kwargs)


class UTCDateTimeField(fields.DateTime):
    """ISO 8601 in UTC with a `Z`, as `2024-04-27T12:34:56Z`."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
