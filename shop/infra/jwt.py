"""flask-jwt-extended, verifying each bearer token once per process instead of on every request.

A shopper sends every request of a visit with one access token, and the rate limit (to count a
signed-in user's requests against the user) and the view (to authenticate) both need its claims;
each verification is three PyJWT parses and an HMAC check, about 8% of an order's worker CPU in
`make profile`. flask-jwt-extended has no public hook for reusing claims, so this overrides its
private `JWTManager._decode_jwt_from_config` (the one place every decoding goes through): the claims
of a token that verified are kept in a bounded per-process table keyed by the token itself and the
secret and algorithm that verified it, and handed out as copies while the token's `exp` (with the
configured leeway) and `nbf` hold; past them, or for a token that fails, the library decodes again
and raises its own error. What is per request stays per request: the blocklist (revocation) and the
user's lookup (deactivation) run on every request as before. Checked by tests/test_performance.py.
Upgrade risk: a renamed or re-signatured private method makes that test fail, not the shop silently slow.

The same for the token's header: after verifying, `verify_jwt_in_request` parses the token once
more to keep its header (`get_unverified_jwt_headers`, which base64-decodes and validates every
segment character by character: about 5% of an order's worker CPU). The function is looked up by
name in `flask_jwt_extended.view_decorators`, its only caller, so that name is pointed at a
remembering copy: the header of a token is parsed once per process (bounded as above). It is
called only for tokens that verified, so only those are remembered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import flask_jwt_extended.view_decorators as view_decorators
from flask import current_app, has_request_context, request
from flask_jwt_extended import JWTManager, decode_token
from flask_jwt_extended.utils import get_unverified_jwt_headers

# Tokens remembered per process: a few thousand shoppers per worker, each token a few hundred bytes.
VERIFIED_TOKENS = 10_000
_BEARER_CLAIMS = "shop.jwt.bearer_claims"


class OnceJWTManager(JWTManager):
    """flask-jwt-extended, verifying a given token once per process while it is valid."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._verified: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: str | None = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if not has_request_context():
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        config = current_app.config
        key = (encoded_token, csrf_value, allow_expired, config.get("JWT_SECRET_KEY"), config.get("JWT_ALGORITHM"))
        with self._lock:
            claims = self._verified.get(key)
            if claims is not None:
                self._verified.move_to_end(key)
        if claims is not None and _still_valid(claims, allow_expired, config.get("JWT_DECODE_LEEWAY", 0)):
            return dict(claims)
        claims = super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        with self._lock:
            self._verified[key] = claims
            if len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        return dict(claims)


def _still_valid(claims: dict[str, Any], allow_expired: bool, leeway: Any) -> bool:
    now = time.time()
    seconds = leeway.total_seconds() if hasattr(leeway, "total_seconds") else float(leeway or 0)
    if "nbf" in claims and claims["nbf"] > now + seconds:
        return False
    return allow_expired or "exp" not in claims or claims["exp"] > now - seconds


def bearer_claims() -> dict[str, Any] | None:
    """The claims of this request's bearer token when it verifies (signature, expiry), else None; once a request.

    For the hooks that run before the view (the rate limit's key, the revocation check's prefetch):
    the view still checks the token fully (revocation, the user, its type).
    """
    environ = request.environ
    if _BEARER_CLAIMS in environ:
        return environ[_BEARER_CLAIMS]
    header = environ.get("HTTP_AUTHORIZATION")
    claims = None
    if header and header.startswith("Bearer "):
        try:
            claims = decode_token(header[7:])
        except Exception:  # noqa: BLE001 - any bad token: no claims (the view answers 401)
            claims = None
    environ[_BEARER_CLAIMS] = claims
    return claims


_headers: OrderedDict[str, dict[str, Any]] = OrderedDict()
_headers_lock = threading.Lock()


def remembered_headers(encoded_token: str) -> dict[str, Any]:
    """`get_unverified_jwt_headers`, parsing a given token's header once per process."""
    with _headers_lock:
        header = _headers.get(encoded_token)
        if header is not None:
            _headers.move_to_end(encoded_token)
            return dict(header)
    header = get_unverified_jwt_headers(encoded_token)
    with _headers_lock:
        _headers[encoded_token] = header
        if len(_headers) > VERIFIED_TOKENS:
            _headers.popitem(last=False)
    return dict(header)


view_decorators.get_unverified_jwt_headers = remembered_headers
