"""One error body everywhere, and an OpenAPI document that describes every route."""

from __future__ import annotations

import re

import pytest

ERROR_KEYS = {"code", "status", "message"}


def _assert_error(response, code: int) -> dict:
    assert response.status_code == code
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) >= ERROR_KEYS and body["code"] == code
    return body


def test_unknown_path_is_404_json(client):
    _assert_error(client.get("/api/nowhere/"), 404)


def test_wrong_method_is_405_json_with_allow(client):
    response = client.delete("/api/token/")
    _assert_error(response, 405)
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ('"text"', "application/json"),
        ("a=b", "application/x-www-form-urlencoded"),
    ],
)
def test_body_that_is_not_a_json_object_is_400(client, data, content_type):
    _assert_error(client.post("/api/users/", data=data, content_type=content_type), 400)


def test_body_over_the_limit_is_413_json(client):
    big = '{"username": "' + "a" * (1024 * 1024 + 10) + '"}'
    _assert_error(client.post("/api/users/", data=big, content_type="application/json"), 413)


def test_unhandled_exception_is_500_json_without_traceback(app):
    app_500 = _app_with_failing_route()
    response = app_500.test_client().get("/boom")

    body = _assert_error(response, 500)
    assert "Traceback" not in response.get_data(as_text=True) and "RuntimeError" not in str(body)


def _app_with_failing_route():
    from shop import create_app
    from tests.conftest import app_config

    app = create_app(app_config(TESTING=False))

    @app.route("/boom")
    def boom():
        raise RuntimeError("secret internals")

    return app


def test_openapi_document_lists_every_route_with_security(client, app):
    spec = client.get("/api/openapi.json").get_json()

    assert spec["openapi"].startswith("3.")
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    documented = set(spec["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("api-docs.", "api-docs-assets.")):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in documented, f"{rule.rule} is not in the OpenAPI document"
    me = spec["paths"]["/api/users/me/"]["get"]
    assert me["summary"] and me["security"] == [{"bearerAuth": []}]
    assert "401" in me["responses"]


def test_swagger_ui_and_redoc_are_served_with_their_files_from_the_shop_itself(client):
    swagger_ui = client.get("/api/docs/")
    redoc = client.get("/api/redoc/")

    assert swagger_ui.status_code == 200 and redoc.status_code == 200
    pages = swagger_ui.get_data(as_text=True) + redoc.get_data(as_text=True)
    loaded = re.findall(r'(?:src|href)="([^"]+)"', pages)
    assert sorted(loaded) == [
        "/api/docs/assets/redoc.standalone.js",
        "/api/docs/assets/swagger-ui-bundle.js",
        "/api/docs/assets/swagger-ui-standalone-preset.js",
        "/api/docs/assets/swagger-ui.css",
    ]
    for url in loaded:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.data) > 10_000, url
        assert asset.mimetype == ("text/css" if url.endswith(".css") else "text/javascript")
        assert asset.headers["Cache-Control"] == "public, max-age=86400" and asset.headers["ETag"]
        assert client.get(url, headers={"If-None-Match": asset.headers["ETag"]}).status_code == 304
    for csp in (swagger_ui.headers["Content-Security-Policy"], redoc.headers["Content-Security-Policy"]):
        assert "https:" not in csp and "http:" not in csp  # the pages load nothing from another host
    assert '"persistAuthorization":true' in swagger_ui.get_data(as_text=True)


def test_only_the_files_the_documentation_pages_load_are_served(client, monkeypatch, tmp_path):
    from shop.core import apidocs

    for name in ("package.json", "..%2Fpackage.json", "swagger-ui-dist", "index.html"):
        _assert_error(client.get(f"/api/docs/assets/{name}"), 404)
    monkeypatch.setattr(apidocs, "NODE_MODULES", tmp_path)
    body = _assert_error(client.get("/api/docs/assets/redoc.standalone.js"), 404)
    assert "make install" in body["message"]


def test_health(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "database" in ready.get_json()["checks"]


@pytest.mark.parametrize(
    "body", ['{"username": 1e400}', '{"username": 123456789012345678901234567890}', '{"username": NaN}']
)
def test_numbers_out_of_range_are_a_validation_error_not_bad_json(client, body):
    _assert_error(client.post("/api/users/", data=body, content_type="application/json"), 422)


def test_a_connection_lost_after_the_answer_does_not_turn_it_into_a_500():
    """The database restarts while a request is finishing: closing its session fails, the answer stands."""
    import os

    from sqlalchemy import text

    from shop import create_app
    from shop.extensions import db
    from tests.conftest import app_config, need_service

    need_service("TEST_DATABASE_URL (PostgreSQL)", os.environ.get("TEST_DATABASE_URL"))
    app = create_app(app_config(TESTING=False))

    @app.route("/last-words")
    def last_words():
        pid = db.session.scalar(text("SELECT pg_backend_pid()"))
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return {"status": "answered"}

    response = app.test_client().get("/last-words")

    assert response.status_code == 200 and response.get_json() == {"status": "answered"}
    with app.app_context():
        assert db.session.scalar(text("SELECT 1")) == 1  # the pool recovered
