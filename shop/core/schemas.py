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


def Id(**kwargs: Any) -> fields.Integer:  # noqa: N802 - reads like a field class
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID), **kwargs)


class UTCDateTimeField(fields.DateTime):
    """ISO 8601 in UTC with a `Z`, as `2024-04-27T12:34:56Z`."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
