"""OWASP API3:2023 Broken Object Property Level Authorization: mass assignment of fields a caller may
not set (staff flag, prices, totals, statuses, ids, timestamps) and answers that say more than they should."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from shop.extensions import db
from shop.orders.models import Order, OrderItem
from shop.products.models import Category, Product
from shop.users.models import User
from tests.conftest import PASSWORD
from tests.factories import make_category, make_product
from tests.security.conftest import assert_error, concrete, operations


def _count(app: Any, model: Any) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def _refused(response: Any, field: str) -> None:
    """422 naming the field it refused."""
    body = assert_error(response, 422)
    assert field in str(body.get("errors")), body


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _objects(spec: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema and every object schema nested in it."""
    schema = _resolve(spec, schema)
    found = [schema] if schema.get("type") == "object" else []
    for child in [*schema.get("properties", {}).values(), schema.get("items", {})]:
        found += _objects(spec, child) if child else []
    return found


def _bodies(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation["requestBody"]["content"]["application/json"]["schema"])
        for method, path, operation in operations(spec)
        if "requestBody" in operation
    ]


def test_every_request_body_in_the_document_refuses_unknown_fields(spec):
    bodies = _bodies(spec)

    assert len(bodies) >= 14
    for method, path, schema in bodies:
        for obj in _objects(spec, schema):
            assert obj.get("additionalProperties") is False, (method, path, obj)


def test_every_write_refuses_a_field_it_does_not_take(client, spec, admin_headers):
    """Sent as an admin, so nothing stands in the way but the body's schema."""
    for method, path, _ in _bodies(spec):
        response = client.open(concrete(path), method=method.upper(), json={"is_staff": True}, headers=admin_headers)
        _refused(response, "is_staff")


def test_every_read_only_field_of_an_answer_is_refused_in_its_request(client, spec, admin_headers):
    """A field the answer marks readOnly (an id, a timestamp, a nested category) cannot be written."""
    tried = []
    for method, path, schema in _bodies(spec):
        responses = spec["paths"][path][method]["responses"]
        answer = next(response for code, response in responses.items() if code.startswith("2"))
        content = answer.get("content", {}).get("application/json")
        if content is None:
            continue
        writable = _resolve(spec, schema).get("properties", {})
        shown = _resolve(spec, content["schema"]).get("properties", {})
        for name in [name for name, prop in shown.items() if prop.get("readOnly") and name not in writable]:
            response = client.open(concrete(path), method=method.upper(), json={name: 1}, headers=admin_headers)
            _refused(response, name)
            tried.append((method, path, name))

    assert ("post", "/api/users/", "id") in tried
    assert ("post", "/api/products/", "category") in tried


@pytest.mark.parametrize("field", ["is_staff", "is_active", "id", "date_joined", "password_hash", "role"])
def test_registration_cannot_set_privileges_or_internals(app, client, field):
    value: Any = {"is_staff": True, "is_active": True, "id": 1, "role": "admin"}.get(field, "2020-01-01T00:00:00Z")
    body = {"username": "climber", "email": "climber@example.com", "password": PASSWORD, "password2": PASSWORD}

    _refused(client.post("/api/users/", json={**body, field: value}), field)

    assert _count(app, User) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("is_staff", True),
        ("is_active", False),
        ("username", "boss"),
        ("id", 1),
        ("date_joined", "2020-01-01T00:00:00Z"),
        ("password", "n3w-pass-word"),
        ("password_hash", "pbkdf2:sha256:1$x$y"),
    ],
)
def test_a_customer_cannot_promote_or_rename_themselves(app, client, user, user_headers, field, value):
    _refused(client.patch("/api/users/me/", json={"first_name": "Al", field: value}, headers=user_headers), field)

    with app.app_context():
        alice = db.session.get(User, user.id)
        assert (alice.is_staff, alice.is_active, alice.username, alice.first_name) == (False, True, "alice", "")
    assert client.get("/api/users/", headers=user_headers).status_code == 403


@pytest.fixture
def catalog(app: Any) -> tuple[int, int]:
    with app.app_context():
        category = make_category()
        return category.id, make_product(category, price="10.00", stock=10).id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 999),
        ("hidden", True),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("updated_at", "2020-01-01T00:00:00Z"),
        ("category", {"id": 1, "name": "Sneaky", "description": ""}),
    ],
)
def test_product_writes_refuse_read_only_fields(app, client, staff_headers, catalog, field, value):
    category_id, product_id = catalog
    new = {"name": "Lamp", "price": "9.99", "stock": 1, "category_id": category_id, field: value}
    replace = {**new, "description": "", "image": None}

    _refused(client.post("/api/products/", json=new, headers=staff_headers), field)
    _refused(client.put(f"/api/products/{product_id}/", json=replace, headers=staff_headers), field)
    _refused(client.patch(f"/api/products/{product_id}/", json={field: value}, headers=staff_headers), field)
    _refused(client.post("/api/categories/", json={"name": "Desk", field: value}, headers=staff_headers), field)

    assert _count(app, Product) == 1 and _count(app, Category) == 1
    with app.app_context():
        product = db.session.get(Product, product_id)
        assert (product.id, product.hidden, product.stock) == (product_id, False, 10)


def test_a_stock_adjustment_cannot_set_the_stock_or_price_outright(client, staff_headers, catalog):
    _, product_id = catalog

    for extra in ({"stock": 1_000}, {"price": "0.01"}):
        _refused(
            client.post(f"/api/products/{product_id}/stock/", json={"delta": 1, **extra}, headers=staff_headers),
            next(iter(extra)),
        )

    assert client.get(f"/api/products/{product_id}/").get_json()["stock"] == 10


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"total": "0.01"}, "total"),
        ({"status": "paid"}, "status"),
        ({"user": "boss"}, "user"),
        ({"id": 1}, "id"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ({"items": [{"price": "0.01"}]}, "price"),
        ({"items": [{"unit_price": "0.01"}]}, "unit_price"),
        ({"items": [{"product": {"id": 1, "price": "0.01"}}]}, "product"),
    ],
)
def test_an_order_cannot_carry_prices_totals_statuses_or_owners(app, client, user_headers, catalog, body, field):
    _, product_id = catalog
    line = {"product_id": product_id, "quantity": 1}
    order = {"items": [{**line, **body["items"][0]}]} if "items" in body else {"items": [line], **body}

    _refused(client.post("/api/orders/", json=order, headers=user_headers), field)

    assert (_count(app, Order), _count(app, OrderItem)) == (0, 0)
    assert client.get(f"/api/products/{product_id}/").get_json()["stock"] == 10


def test_a_status_change_cannot_rewrite_the_order(client, user_headers, staff_headers, catalog):
    _, product_id = catalog
    order = client.post(
        "/api/orders/", json={"items": [{"product_id": product_id, "quantity": 1}]}, headers=user_headers
    ).get_json()

    for extra in ({"total": "0.00"}, {"user": "boss"}, {"items": []}):
        response = client.patch(f"/api/orders/{order['id']}/", json={"status": "paid", **extra}, headers=staff_headers)
        _refused(response, next(iter(extra)))

    after = client.get(f"/api/orders/{order['id']}/", headers=user_headers).get_json()
    assert (after["status"], after["total"], after["user"]) == ("pending", "10.00", "alice")


# What the answers show: no more than the caller may know.


def test_answers_show_no_internal_or_other_peoples_fields(app, client, user, user_headers, staff_headers, catalog):
    _, product_id = catalog
    order = client.post(
        "/api/orders/", json={"items": [{"product_id": product_id, "quantity": 1}]}, headers=user_headers
    ).get_json()

    profile = client.get("/api/users/me/", headers=user_headers).get_json()
    product = client.get(f"/api/products/{product_id}/").get_json()
    listed = client.get("/api/products/").get_json()[0]

    assert set(profile) == {"id", "username", "email", "first_name", "last_name", "phone_number"}
    assert "hidden" not in product and "hidden" not in listed
    assert order["user"] == "alice" and "alice@example.com" not in str(order)
    # Staff see the account flags in their user list; customers never reach it.
    staff_view = client.get("/api/users/", headers=staff_headers).get_json()
    assert {"is_staff", "is_active"} <= set(staff_view[0]) and "password_hash" not in staff_view[0]
