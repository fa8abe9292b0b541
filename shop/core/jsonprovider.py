"""JSON through orjson: the shop's responses are encoded many times a second."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
from flask.json.provider import JSONProvider

# marshmallow reports errors of list items under integer keys.
OPTIONS = orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps_bytes(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, default=_default, option=OPTIONS)
    except TypeError:
        # orjson refuses integers past 64 bits, which a client may echo back to us in an error.
        return json.dumps(obj, default=_default).encode()


class OrjsonProvider(JSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps_bytes(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError as exc:
            # orjson refuses numbers past its range (1e400, integers past 64 bits); the standard
            # library reads them, so validation can answer 422 rather than "not JSON". Nesting
            # deeper than orjson allows stays refused.
            try:
                return json.loads(s)
            except RecursionError:
                raise exc from None

    def response(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps_bytes(obj), mimetype="application/json")
