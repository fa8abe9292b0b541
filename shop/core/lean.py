"""Flask and flask-jwt-extended without per-request costs the shop never needs (measured by `make profile`).

- Cookie sessions: the API authenticates with bearer tokens and never reads or writes `session`,
  yet Flask builds a signing serializer and parses the Cookie header on every request to open one.
  Here every request gets Flask's null session (reading is fine, writing raises).
- `ensure_sync`: Flask asks whether each hook and view is a coroutine function on every call
  (sixteen times a cached catalog page); here the answer is remembered per function.
- Token decoding: the rate limiter (to count a signed-in user's requests) and the view (to
  authenticate) both decode the bearer token; here a request decodes a given token once.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask, Request, Response, has_request_context, request
from flask.sessions import SessionInterface, SessionMixin
from flask_jwt_extended import JWTManager

_DECODED = "shop.decoded_tokens"


class NoSessions(SessionInterface):
    """No cookie sessions: `open_session` answers None, so Flask gives the request a null session."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        return None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


class LeanFlask(Flask):
    session_interface = NoSessions()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: dict[Callable[..., Any], bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # A bound method is made anew on each access: remember the function underneath.
        key = getattr(func, "__func__", func)
        synchronous = self._synchronous.get(key)
        if synchronous is None:
            synchronous = self._synchronous[key] = not iscoroutinefunction(func)
        return func if synchronous else self.async_to_sync(func)


class OnceJWTManager(JWTManager):
    """flask-jwt-extended, decoding each token at most once per request (failures are decoded again)."""

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: str | None = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if not has_request_context():
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        decoded = request.environ.setdefault(_DECODED, {})
        key = (encoded_token, csrf_value, allow_expired)
        claims = decoded.get(key)
        if claims is None:
            claims = decoded[key] = super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        return dict(claims)
