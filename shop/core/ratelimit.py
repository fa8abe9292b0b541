"""Who a request counts against, and how much it may do: per user when signed in, else per IP."""

from __future__ import annotations

from flask import current_app, g, request
from flask_jwt_extended import decode_token


def _client_ip() -> str:
    """The client's address, trusting `X-Forwarded-For` only through TRUSTED_PROXIES hops."""
    hops = current_app.config["TRUSTED_PROXIES"]
    if hops:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.remote_addr or "unknown"


def _bearer_subject() -> str | None:
    """The user id in a well-formed access token, or None; the view still checks the token fully."""
    if "rate_limit_subject" in g:
        return g.rate_limit_subject
    subject = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        try:
            claims = decode_token(header[7:])
        except Exception:  # noqa: BLE001 - any bad token counts as anonymous here
            claims = None
        if claims and claims.get("type") == "access":
            subject = str(claims["sub"])
    g.rate_limit_subject = subject
    return subject


def rate_limit_key() -> str:
    subject = _bearer_subject()
    return f"user:{subject}" if subject else f"ip:{_client_ip()}"


def client_ip_key() -> str:
    return f"ip:{_client_ip()}"


def default_limit() -> str:
    config = current_app.config
    return config["RATELIMIT_USER"] if _bearer_subject() else config["RATELIMIT_ANON"]


def auth_limit() -> str:
    return current_app.config["RATELIMIT_AUTH"]
