"""OWASP API8:2023 Security Misconfiguration: security headers on every kind of answer, CORS for the
trusted origins only, no debug page or traceback, no caching of what a token saw, secrets kept out of git."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from shop import create_app
from tests.conftest import PASSWORD, app_config, bearer, token_for
from tests.factories import make_product
from tests.security.conftest import assert_error, dispose

ROOT = Path(__file__).resolve().parents[2]
TRUSTED = "https://shop.example.com"


def _csp(response: Any) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def _assert_hardened(response: Any) -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    assert _csp(response)["frame-ancestors"] == ["'none'"]


@pytest.fixture
def failing_app(app: Flask) -> Any:
    """An app like production (no TESTING, APP_ENV=production) with a route that raises."""
    failing = create_app(app_config(TESTING=False, APP_ENV="production"))

    @failing.route("/api/boom/")
    def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2 at /srv/shop/app.py")

    yield failing
    dispose(failing)


def test_every_kind_of_answer_carries_the_security_headers(app, client, limited_app, failing_app, user, user_headers):
    with app.app_context():
        product_id = make_product().id
    listed = client.get("/api/products/")
    pair = token_for(client, "alice")
    answers = {
        "200 list": listed,
        "304 not modified": client.get("/api/products/", headers={"If-None-Match": listed.headers["ETag"]}),
        "200 detail": client.get(f"/api/products/{product_id}/"),
        "201 created": client.post(
            "/api/orders/", json={"items": [{"product_id": product_id, "quantity": 1}]}, headers=user_headers
        ),
        "204 no content": client.post("/api/token/revoke/", headers=bearer(pair["access"])),
        "400 bad json": client.post("/api/token/", data="{", content_type="application/json"),
        "401": client.get("/api/users/me/"),
        "404": client.get("/api/nowhere/"),
        "405": client.delete("/api/token/"),
        "413": client.post("/api/token/", data="x" * (1024 * 1024 + 1), content_type="application/json"),
        "422": client.post("/api/token/", json={}),
        "500": failing_app.test_client().get("/api/boom/"),
        "openapi.json": client.get("/api/openapi.json"),
        "swagger ui": client.get("/api/docs/"),
        "redoc": client.get("/api/redoc/"),
        "healthz": client.get("/healthz"),
        "metrics": client.get("/metrics"),
    }
    limited = limited_app(RATELIMIT_ANON="1/minute").test_client()
    limited.get("/api/products/")
    answers["429"] = limited.get("/api/products/")

    for name, response in answers.items():
        assert response.status_code == int(name[:3]) if name[:3].isdigit() else response.status_code == 200, name
        _assert_hardened(response)


def test_json_answers_may_load_nothing(client):
    for response in (client.get("/api/products/"), client.get("/api/nowhere/"), client.get("/api/openapi.json")):
        assert _csp(response)["default-src"] == ["'none'"]


def _source(url: bytes) -> str:
    """The CSP source that allows a page's URL: its origin, or 'self' for the shop's own."""
    parts = urlsplit(url.decode())
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "'self'"


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_docs_pages_policy_allows_exactly_what_they_load(client, page):
    """Swagger UI and ReDoc still work: their own scripts and styles and inline scripts are allowed, nothing else."""
    response = client.get(page)
    html = response.get_data()
    csp = _csp(response)

    assert response.status_code == 200 and csp["default-src"] == ["'none'"]
    scripts = {_source(src) for src in re.findall(rb'<script src="([^"]+)"', html)}
    styles = {_source(href) for href in re.findall(rb'<link href="([^"]+)"', html)}
    assert scripts <= {"'self'"} and styles <= {"'self'"}  # nothing from another host
    assert {source for source in csp["script-src"] if not source.startswith("'sha256-")} == scripts
    assert set(csp["style-src"]) - {"'unsafe-inline'"} <= {"'self'"}
    for inline in re.findall(rb"<script>(.*?)</script>", html, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(inline).digest()).decode()
        assert f"'sha256-{digest}'" in csp["script-src"]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    assert csp["connect-src"] == ["'self'"]  # the spec is fetched from this origin only


def test_what_a_token_saw_is_never_cached(client, user, user_headers):
    for response in (
        client.get("/api/users/me/", headers=user_headers),
        client.get("/api/orders/", headers=user_headers),
        client.get("/api/users/", headers=user_headers),  # 403
        client.get("/api/users/me/", headers=bearer("garbage")),  # 401
        client.post("/api/token/", json={"username": user.username, "password": PASSWORD}),  # no token sent
    ):
        assert response.headers["Cache-Control"] == "no-store"


def test_catalog_reads_stay_cacheable_with_or_without_a_token(client, user_headers):
    # The catalog answers everyone the same (tokens are ignored), so Nginx's micro-cache may keep it.
    with client.application.app_context():
        product = make_product()
        product_id, category_id = product.id, product.category_id

    for path in (
        "/api/products/",
        f"/api/products/{product_id}/",
        "/api/categories/",
        f"/api/categories/{category_id}/",
    ):
        for headers in ({}, user_headers):
            response = client.get(path, headers=headers)
            assert response.status_code == 200
            assert "no-store" not in response.headers.get("Cache-Control", "")
            assert "private" not in response.headers.get("Cache-Control", "")


def test_a_server_error_shows_no_traceback_or_debug_page(failing_app):
    response = failing_app.test_client().get("/api/boom/")

    body = assert_error(response, 500)
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "hunter2", "/srv/shop", "Werkzeug Debugger", "<html"):
        assert leak not in text
    assert body["status"] == "Internal Server Error" and not failing_app.debug


# CORS: the trusted origins only, never with credentials.


@pytest.fixture
def cors_client(limited_app: Any) -> Any:
    return limited_app(RATELIMIT_ENABLED=False, CORS_ORIGINS=[TRUSTED]).test_client()


def test_a_trusted_origin_is_allowed_without_credentials(cors_client):
    response = cors_client.get("/api/products/", headers={"Origin": TRUSTED})

    assert response.headers["Access-Control-Allow-Origin"] == TRUSTED
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    exposed = {name.strip().lower() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-pagination", "etag", "retry-after", "idempotent-replayed"} <= exposed


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://shop.example.com.evil.example",
        "https://evilshop.example.com",
        "http://shop.example.com",
        "https://shop.example.com:8443",
        "null",
        "*",
    ],
)
def test_an_untrusted_origin_is_not_reflected(cors_client, origin):
    simple = cors_client.get("/api/products/", headers={"Origin": origin})
    preflight = cors_client.options(
        "/api/orders/",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )

    for response in (simple, preflight):
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_a_preflight_from_the_trusted_origin_allows_the_api_headers_only(cors_client):
    response = cors_client.options(
        "/api/orders/",
        headers={
            "Origin": TRUSTED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, x-evil",
        },
    )

    allowed = {name.strip().lower() for name in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert response.headers["Access-Control-Allow-Origin"] == TRUSTED
    assert allowed == {"authorization", "content-type", "idempotency-key"}
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_no_origin_is_trusted_by_default(client):
    response = client.get("/api/products/", headers={"Origin": TRUSTED})
    preflight = client.options(
        "/api/orders/",
        headers={
            "Origin": TRUSTED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )

    for answer in (response, preflight):
        assert not [name for name, _ in answer.headers if name.lower().startswith("access-control-")]


def test_a_wildcard_origin_never_comes_with_credentials(limited_app):
    client = limited_app(RATELIMIT_ENABLED=False, CORS_ORIGINS=["*"]).test_client()

    response = client.get("/api/products/", headers={"Origin": "https://anyone.example", "Cookie": "session=1"})

    assert response.headers["Access-Control-Allow-Origin"] in {"*", "https://anyone.example"}
    assert "Access-Control-Allow-Credentials" not in response.headers


# Secrets stay out of git and out of the defaults.


def test_the_env_file_is_ignored_by_git_and_the_example_is_not():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT, check=False)

    assert ignored.returncode == 0 and example.returncode == 1


def test_the_env_example_documents_every_setting_and_holds_no_secret():
    read = set(re.findall(r"""(?:env\.get\(|_int\(env, )"([A-Z_]+)\"""", (ROOT / "shop" / "config.py").read_text()))
    example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if re.match(r"^[A-Z_]+=", line)
    )

    assert {"SECRET_KEY", "JWT_SECRET_KEY", "MAIL_PASSWORD", "DATABASE_URL", "REDIS_URL"} <= read
    assert read <= set(example), read - set(example)
    for secret in ("SECRET_KEY", "JWT_SECRET_KEY", "MAIL_PASSWORD"):
        assert example[secret] == "", secret


def test_production_refuses_the_example_values():
    from shop.config import ConfigError, load_config

    example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if re.match(r"^[A-Z_]+=", line)
    )

    with pytest.raises(ConfigError):
        load_config({**example, "APP_ENV": "production"})


def test_the_security_lint_is_on_and_the_code_passes_it():
    """ruff's S rules (bandit's checks) are selected for the project, and the application code has no finding."""
    import sys
    import tomllib

    selected = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["select"]
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run(
        [str(ruff), "check", "--no-cache", "--select", "S", "shop", "wsgi.py", "celery_worker.py", "gunicorn.conf.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert "S" in selected
    assert result.returncode == 0, result.stdout
