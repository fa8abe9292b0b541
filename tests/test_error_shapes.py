"""One error body from every source of errors a client can receive, as the OpenAPI document's Error component says.

Field errors sit under the location they were found in (json, query, headers), then by field; a
list's item under its index. Nginx's own errors are tested with the real Nginx (tests/test_ops_nginx.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, request
from openapi_schema_validator import OAS30Validator
from sqlalchemy import text

from shop import create_app
from shop.extensions import db
from shop.orders.idempotency import lock_key
from tests.conftest import PASSWORD, app_config, is_postgres, need_service
from tests.factories import make_product
from tests.security.conftest import dispose, limited_app  # noqa: F401 - a fixture

ORDER = {"items": [{"product_id": 1, "quantity": 1}]}


@pytest.fixture(scope="module")
def error_schema(app: Flask) -> OAS30Validator:
    document = app.test_client().get("/api/openapi.json").get_json()
    return OAS30Validator({"$ref": "#/components/schemas/Error", "components": document["components"]})


@pytest.fixture
def error_of(error_schema: OAS30Validator) -> Any:
    def check(response: Any, code: int) -> dict[str, Any]:
        """The body is JSON, conforms to the Error component and carries this status; it is returned."""
        assert response.status_code == code, response.get_data(as_text=True)[:300]
        assert response.mimetype == "application/json"
        body = response.get_json()
        error_schema.validate(body)
        assert body["code"] == code and body["message"]
        return body

    return check


def test_body_field_errors_are_under_json_by_field(client, error_of):
    body = error_of(client.post("/api/users/", json={"username": "ab"}), 422)

    assert set(body["errors"]) == {"json"}
    assert {"username", "email", "password", "password2"} <= set(body["errors"]["json"])
    assert all(isinstance(messages, list) for messages in body["errors"]["json"].values())


def test_a_list_items_errors_are_under_its_index(client, user_headers, error_of):
    order = {"items": [{"product_id": 1, "quantity": 1}, {"product_id": 2, "quantity": 0}]}
    body = error_of(client.post("/api/orders/", json=order, headers=user_headers), 422)

    assert list(body["errors"]["json"]["items"]) == ["1"]
    assert list(body["errors"]["json"]["items"]["1"]) == ["quantity"]


@pytest.mark.parametrize("query", ["ordering=cheapest", "page_size=101", "min_price=1e3"])
def test_query_errors_are_under_query(client, error_of, query):
    body = error_of(client.get(f"/api/products/?{query}"), 422)

    assert body["errors"] == {"query": {query.split("=")[0]: body["errors"]["query"][query.split("=")[0]]}}


def test_header_errors_are_under_headers(client, user_headers, error_of):
    long_key = {**user_headers, "Idempotency-Key": "k" * 256}
    body = error_of(client.post("/api/orders/", json=ORDER, headers=long_key), 422)

    assert body["errors"] == {"headers": {"Idempotency-Key": [body["errors"]["headers"]["Idempotency-Key"][0]]}}


@pytest.mark.parametrize("path", ["/api/products/abc/", "/api/products/2147483648/", "/api/orders/0/"])
def test_a_path_value_the_route_cannot_take_is_404(client, user_headers, error_of, path):
    """Path parameters are the routes' converters: a value outside them names no resource."""
    error_of(client.get(path, headers=user_headers), 404)


def test_rules_the_service_checks_answer_the_same_structure(app, client, user, user_headers, error_of):
    taken = {"username": "alice", "email": "new@example.com", "password": PASSWORD, "password2": PASSWORD}
    body = error_of(client.post("/api/users/", json=taken), 422)
    assert list(body["errors"]) == ["json"] and list(body["errors"]["json"]) == ["username"]

    unknown = error_of(
        client.post("/api/orders/", json={"items": [{"product_id": 999, "quantity": 1}]}, headers=user_headers), 422
    )
    assert unknown["errors"] == {"json": {"items": {"0": {"product_id": ["No such product."]}}}}

    with app.app_context():
        product = make_product(stock=5)
    key = {**user_headers, "Idempotency-Key": "shape-1"}
    first = {"items": [{"product_id": product.id, "quantity": 1}]}
    assert client.post("/api/orders/", json=first, headers=key).status_code == 201
    other = error_of(
        client.post("/api/orders/", json={"items": [{"product_id": product.id, "quantity": 2}]}, headers=key), 422
    )
    assert list(other["errors"]) == ["headers"] and list(other["errors"]["headers"]) == ["Idempotency-Key"]


def test_an_idempotency_key_still_in_flight_is_409(app, client, user, user_headers, error_of):
    """A first request holding its key (PostgreSQL's advisory lock on user and key) makes a repeat 409 at once."""
    if not is_postgres(app):
        need_service("TEST_DATABASE_URL (PostgreSQL)", None)
    with app.app_context():
        product = make_product(stock=5)
        order = {"items": [{"product_id": product.id, "quantity": 1}]}
        with db.engine.connect() as first:
            first.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(user.id, "busy")})
            try:
                repeat = client.post("/api/orders/", json=order, headers={**user_headers, "Idempotency-Key": "busy"})
            finally:
                first.execute(text("SELECT pg_advisory_unlock_all()"))

    error_of(repeat, 409)


def test_not_enough_stock_is_409_with_each_short_line(app, client, user_headers, error_of):
    with app.app_context():
        product = make_product(stock=1)
    order = {"items": [{"product_id": product.id, "quantity": 3}]}
    body = error_of(client.post("/api/orders/", json=order, headers=user_headers), 409)

    assert body["errors"] == {"items": [{"product_id": product.id, "requested": 3, "available": 1}]}


def test_flask_and_werkzeug_errors(client, error_of):
    error_of(client.get("/api/nowhere/"), 404)
    not_allowed = client.delete("/api/token/")
    error_of(not_allowed, 405)
    assert "POST" in not_allowed.headers["Allow"]
    error_of(client.post("/api/users/", data="a=b", content_type="application/x-www-form-urlencoded"), 400)
    error_of(
        client.post("/api/users/", data="{" + " " * (1024 * 1024 + 10) + "}", content_type="application/json"), 413
    )


def test_unsupported_media_type_and_a_crash_are_the_same_body(error_of):
    test_app = create_app(app_config(TESTING=False))

    @test_app.route("/reads-json", methods=["DELETE"])  # the shop's own check answers POST, PUT, PATCH first
    def reads_json() -> dict[str, Any]:
        return request.get_json()  # werkzeug's 415 for a body that is not JSON

    @test_app.route("/crashes")
    def crashes() -> None:
        raise RuntimeError("internals")

    try:
        client = test_app.test_client()
        error_of(client.delete("/reads-json", data="x", content_type="text/plain"), 415)
        error_of(client.get("/crashes"), 500)
    finally:
        dispose(test_app)


def test_token_faults_are_401_with_bearer_and_staff_only_is_403(client, user_headers, error_of):
    missing = client.get("/api/users/me/")
    error_of(missing, 401)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    error_of(client.get("/api/users/me/", headers={"Authorization": "Bearer not-a-token"}), 401)
    error_of(client.get("/api/users/", headers=user_headers), 403)


def test_both_rate_limiters_answer_429_with_retry_after(limited_app, user, error_of):  # noqa: F811 - the fixture
    app = limited_app(RATELIMIT_ANON="2/minute", RATELIMIT_AUTH="1/minute")
    client = app.test_client()

    budget = [client.get("/api/categories/") for _ in range(3)]
    error_of(budget[-1], 429)
    assert int(budget[-1].headers["Retry-After"]) >= 1

    logins = [client.post("/api/token/", json={"username": "alice", "password": "wrong-pass"}) for _ in range(2)]
    error_of(logins[-1], 429)
    assert int(logins[-1].headers["Retry-After"]) >= 1
