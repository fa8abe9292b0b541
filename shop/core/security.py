"""Response hardening: security headers on every answer, and CORS for the trusted origins only."""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, current_app, request

# Headers a browser-based client may read from a cross-origin answer, besides the CORS-safelisted ones.
EXPOSED_HEADERS = [
    "ETag",
    "X-Pagination",
    "Link",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Idempotent-Replayed",
    "X-Request-ID",
    "WWW-Authenticate",
]
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "If-None-Match", "X-Request-ID"]
# A JSON answer loads nothing and may not be framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# flask-smorest serves Swagger UI and ReDoc from this blueprint.
DOCS_BLUEPRINT = "api-docs"
# The catalog answers every reader the same (it ignores tokens by design): its reads stay cacheable,
# by Nginx's micro-cache too, whoever sends them.
CATALOG_BLUEPRINTS = frozenset({"products", "categories"})
READS = frozenset({"GET", "HEAD"})
# Answers that hand out credentials are never cached, whatever the request carried (RFC 6749 5.1).
CREDENTIAL_BLUEPRINTS = frozenset({"tokens"})
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def docs_csp(body: bytes) -> str:
    """The policy of a documentation page (Swagger UI, ReDoc): the shop's own files, its inline scripts by hash."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(body)
    ]
    # The pages' scripts and styles are the shop's own (shop/core/apidocs.py): no other host is allowed.
    sources = "'self'"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {' '.join([sources, *hashes])}",
            # ReDoc and Swagger UI style their own elements at run time.
            f"style-src {sources} 'unsafe-inline'",
            f"img-src {sources} data:",
            f"font-src {sources} data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def is_user_dependent(blueprint: str | None, method: str, has_token: bool) -> bool:
    """Whether an answer may depend on who asked: anything answered to a token but a catalog read,
    and every answer of the credential endpoints."""
    if blueprint in CREDENTIAL_BLUEPRINTS:
        return True
    return has_token and not (blueprint in CATALOG_BLUEPRINTS and method in READS)


def add_security_headers(response: Response) -> Response:
    """nosniff, no referrer, no framing, a CSP, and no caching of anything that depends on the user."""
    headers = response.headers
    present = {name.lower() for name, _ in headers}  # one pass over the headers (each look-up is a scan)
    for name, value in STATIC_HEADERS.items():
        if name.lower() not in present:
            headers.add(name, value)
    if "content-security-policy" not in present:
        is_page = request.blueprint == DOCS_BLUEPRINT and response.mimetype == "text/html"
        headers.add("Content-Security-Policy", docs_csp(response.get_data()) if is_page else API_CSP)
    if is_user_dependent(request.blueprint, request.method, "Authorization" in request.headers):
        headers["Cache-Control"] = "no-store"
    if current_app.config["CORS_ORIGINS"]:
        # Whether CORS headers are sent depends on Origin: a shared cache must keep one copy per origin
        # (flask-cors says so itself only when more than one origin is configured).
        response.vary.add("Origin")
    return response


def init_security(app: Flask) -> None:
    """Security headers on every response; CORS on /api/ for CORS_ORIGINS (none: no CORS), never with credentials."""
    from shop.extensions import cors

    app.after_request(add_security_headers)
    if not app.config["CORS_ORIGINS"]:
        return  # no origin is trusted: flask-cors would inspect every answer to add nothing
    cors.init_app(
        app,
        resources={r"/api/*": {"origins": app.config["CORS_ORIGINS"]}},
        supports_credentials=False,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
