"""Field types and base schemas shared by the blueprints."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate
from sqlalchemy.orm import InstrumentedAttribute

# The largest id a 32-bit integer column holds; larger ids are a 422, not a database error.
MAX_ID = 2**31 - 1


# What no text the shop accepts may hold: C0 controls and DEL (PostgreSQL refuses NUL; a newline in a
# name would start a new line of an email), and UTF-16 surrogates (a lone one cannot be encoded as UTF-8,
# and the standard library's JSON reader lets one through). Fields that document lines allow \t \n \r.
# The document states the controls (a JSON Schema pattern cannot name lone surrogates usefully:
# generators drop such patterns); the check below refuses surrogates too.
SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"
LINES = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_SINGLE_LINE = re.compile(r"^[^\x00-\x1f\x7f\ud800-\udfff]*$")
_LINES = re.compile(r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]*$")


def column_length(column: InstrumentedAttribute[Any]) -> int:
    """The length of a model's String column: the one source of a text field's maximum."""
    length = column.property.columns[0].type.length
    if length is None:
        raise TypeError(f"{column} has no length")
    return int(length)


class CleanText:
    """A string field that refuses NUL, other control characters and surrogates (422), whatever its other rules.

    Every string the shop reads from a request (body, query, header) goes through a field with this
    mixin; tests/security/test_text_inputs.py checks that no schema has a plain `fields.String`.
    """

    lines = False

    def __init__(self, *args: Any, lines: bool = False, metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.lines = lines
        metadata = dict(metadata or {})
        validators = kwargs.get("validate")
        validators = validators if isinstance(validators, list | tuple) else [validators] if validators else []
        if not any(isinstance(item, validate.Regexp) for item in validators) and not kwargs.get("dump_only"):
            metadata.setdefault("pattern", LINES if lines else SINGLE_LINE)  # what the OpenAPI document states
        super().__init__(*args, metadata=metadata, **kwargs)  # type: ignore[call-arg]

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)  # type: ignore[misc]
        if isinstance(text, str) and not (_LINES if self.lines else _SINGLE_LINE).match(text):
            allowed = "tabs and line breaks only" if self.lines else "no line breaks or tabs"
            raise ma.ValidationError(f"Text may not contain NUL, control characters or surrogates ({allowed}).")
        return text


class Text(CleanText, fields.String):
    """A string from a request: clean text, `max_length` (or its column's length) and `min_length` enforced."""

    def __init__(
        self,
        *,
        column: InstrumentedAttribute[Any] | None = None,
        max_length: int | None = None,
        min_length: int | None = None,
        validate: Any = None,
        **kwargs: Any,
    ) -> None:
        validators = list(validate if isinstance(validate, list | tuple) else [validate] if validate else [])
        if column is not None:
            max_length = column_length(column)
        if max_length is not None or min_length is not None:
            validators.insert(0, ma.validate.Length(min=min_length, max=max_length))
        super().__init__(validate=validators or None, **kwargs)


class Email(CleanText, fields.Email):
    """An email address from a request, at most its column's length."""

    def __init__(self, *, column: InstrumentedAttribute[Any], **kwargs: Any) -> None:
        super().__init__(validate=[ma.validate.Length(max=column_length(column))], **kwargs)


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


class DescribedRule(validate.Validator):
    """A rule a JSON Schema keyword cannot state (a Unicode property, a confusable check): the field's
    description says it in words instead (`rule.description`), so the document still tells it."""

    def __init__(self, check: Any, description: str) -> None:
        self.check = check
        self.description = description

    def __call__(self, value: Any) -> Any:
        self.check(value)
        return value


def described(field_kwargs: dict[str, Any], *rules: DescribedRule) -> dict[str, Any]:
    """`field_kwargs` with the rules' words added to the field's description."""
    metadata = dict(field_kwargs.pop("metadata", None) or {})
    words = " ".join(rule.description for rule in rules)
    metadata["description"] = f"{metadata['description']} {words}" if metadata.get("description") else words
    return {**field_kwargs, "metadata": metadata}


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
