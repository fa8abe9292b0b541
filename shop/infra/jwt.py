"""flask-jwt-extended, decoding each bearer token at most once per request.

The rate limit (to count a signed-in user's requests against the user) and the view (to
authenticate) both need the token's claims; each decoding is three PyJWT parses and an HMAC check.
flask-jwt-extended has no public hook for reusing claims, so this overrides its private
`JWTManager._decode_jwt_from_config` (the one place every decoding goes through): the claims of a
successfully decoded token are kept on the request (`request.environ`, which no later request
sees) and handed out as copies; a token that fails is decoded again, so its error is raised again.
Measured: one decoding less per signed-in request; tokens are 2-5% of an order's worker CPU
(docs/performance.md). Checked by tests/test_performance.py (a token decoded once per request).
Upgrade risk: a renamed or re-signatured private method makes that test fail, not the shop silently slow.
"""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from flask_jwt_extended import JWTManager

_DECODED = "shop.decoded_tokens"


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
