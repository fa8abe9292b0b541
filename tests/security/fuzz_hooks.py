"""Schemathesis hooks for `make fuzz`: every request carries a fresh access token of the fuzzed user.

A fresh token per request (not one header for the whole run) keeps the run meaningful after the
fuzzer calls `POST /api/token/revoke/`, which revokes the token it was sent with. The token is
signed with the live server's JWT secret and has the claims flask-jwt-extended issues.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import schemathesis


def mint_access_token(user_id: str, secret: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "fresh": False,
        "iat": now.timestamp(),  # to the microsecond, as the shop issues it (after a "log out everywhere")
        "nbf": now,
        "jti": str(uuid.uuid4()),
        "type": "access",
        "sub": user_id,
        "exp": now + timedelta(minutes=15),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@schemathesis.auth(refresh_interval=None)
class FreshAccessToken:
    """A new token of FUZZ_USER_ID for each request."""

    def get(self, case: Any, context: Any) -> str:
        return mint_access_token(os.environ["FUZZ_USER_ID"], os.environ["FUZZ_JWT_SECRET"])

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
