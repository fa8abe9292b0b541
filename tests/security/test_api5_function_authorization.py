"""OWASP API5:2023 Broken Function Level Authorization: customers and anonymous callers on staff
operations and methods, privilege taken from the database on every request, no method tricks."""

from __future__ import annotations

from typing import Any

import pytest

from shop.extensions import db
from shop.products.models import Product
from shop.users.models import User
from tests.conftest import bearer, token_for
from tests.factories import make_product
from tests.security.conftest import assert_error, operations

STAFF_OPERATIONS = {
    ("get", "/api/users/"),
    ("get", "/api/orders/emails/"),
    ("post", "/api/categories/"),
    ("patch", "/api/categories/{category_id}/"),
    ("delete", "/api/categories/{category_id}/"),
    ("post", "/api/products/"),
    ("put", "/api/products/{product_id}/"),
    ("patch", "/api/products/{product_id}/"),
    ("delete", "/api/products/{product_id}/"),
    ("post", "/api/products/{product_id}/stock/"),
    ("patch", "/api/orders/{order_id}/"),
}
# Staff who also manage users and read their personal data.
ADMIN_OPERATIONS = {
    ("get", "/api/users/{user_id}/"),
    ("patch", "/api/users/{user_id}/"),
}


@pytest.fixture
def world(app: Any, client: Any, user_headers: dict[str, str]) -> dict[str, int]:
    """A product and one of alice's orders, so every id in a path names something that exists."""
    with app.app_context():
        product = make_product(price="5.00", stock=10)
        ids = {"product_id": product.id, "category_id": product.category_id}
    order = client.post(
        "/api/orders/", json={"items": [{"product_id": ids["product_id"], "quantity": 1}]}, headers=user_headers
    )
    return {
        **ids,
        "order_id": order.get_json()["id"],
        "user_id": client.get("/api/users/me/", headers=user_headers).get_json()["id"],
    }


def _url(path: str, world: dict[str, int]) -> str:
    return path.format(**world)


def _body(path: str) -> dict[str, Any]:
    """A body the operation would accept (the order status change checks the caller after the body)."""
    return {"status": "paid"} if path == "/api/orders/{order_id}/" else {}


def test_the_document_lists_exactly_the_staff_operations(spec):
    documented = {(method, path) for method, path, operation in operations(spec) if "403" in operation["responses"]}

    assert documented == STAFF_OPERATIONS | ADMIN_OPERATIONS


def test_a_customer_gets_403_on_every_staff_operation_and_changes_nothing(app, client, user_headers, world):
    for method, path in sorted(STAFF_OPERATIONS | ADMIN_OPERATIONS):
        response = client.open(_url(path, world), method=method.upper(), json=_body(path), headers=user_headers)
        assert_error(response, 403)

    with app.app_context():
        product = db.session.get(Product, world["product_id"])
        assert (product.hidden, product.stock) == (False, 9)
    order = client.get(f"/api/orders/{world['order_id']}/", headers=user_headers).get_json()
    assert order["status"] == "pending"


def test_an_anonymous_caller_gets_401_on_every_staff_operation(client, world):
    for method, path in sorted(STAFF_OPERATIONS | ADMIN_OPERATIONS):
        response = client.open(_url(path, world), method=method.upper(), json={})
        assert_error(response, 401)


def test_staff_pass_the_gate_of_every_staff_operation(client, staff_headers, world):
    for method, path in sorted(STAFF_OPERATIONS):
        response = client.open(_url(path, world), method=method.upper(), json={}, headers=staff_headers)
        assert response.status_code not in {401, 403}, (method, path, response.get_json())


def test_staff_get_403_on_every_admin_operation_and_change_nothing(app, client, user, staff_headers, world):
    for method, path in sorted(ADMIN_OPERATIONS):
        body = {"is_active": False} if method == "patch" else None
        assert_error(client.open(_url(path, world), method=method.upper(), json=body, headers=staff_headers), 403)

    with app.app_context():
        assert db.session.get(User, user.id).is_active


def test_an_admin_passes_the_gate_of_every_operation(client, admin_headers, world):
    for method, path in sorted(STAFF_OPERATIONS | ADMIN_OPERATIONS):
        response = client.open(_url(path, world), method=method.upper(), json={}, headers=admin_headers)
        assert response.status_code not in {401, 403}, (method, path, response.get_json())


def test_the_user_list_has_no_email_or_phone_and_only_admins_read_them(client, user, staff_headers, admin_headers):
    for headers in (staff_headers, admin_headers):
        listed = {row["username"]: row for row in client.get("/api/users/", headers=headers).get_json()}
        assert "email" not in listed["alice"] and "phone_number" not in listed["alice"]

    record = client.get(f"/api/users/{user.id}/", headers=admin_headers).get_json()

    assert record["email"] == "alice@example.com" and "phone_number" in record and record["role"] == "customer"
    assert_error(client.get(f"/api/users/{user.id}/", headers=staff_headers), 403)


def test_staff_rights_are_read_from_the_database_on_every_request(app, client, user, staff, world):
    boss = bearer(token_for(client, "boss")["access"])
    alice = bearer(token_for(client, "alice")["access"])
    with app.app_context():
        db.session.get(User, staff.id).is_staff = False
        db.session.get(User, user.id).is_staff = True
        db.session.commit()

    assert_error(client.get("/api/users/", headers=boss), 403)
    assert client.get("/api/users/", headers=alice).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/orders/{order_id}/"),
        ("PUT", "/api/orders/{order_id}/"),
        ("DELETE", "/api/users/me/"),
        ("PUT", "/api/users/me/"),
        ("GET", "/api/orders/{order_id}/cancel/"),
        ("PATCH", "/api/products/"),
        ("DELETE", "/api/products/"),
        ("GET", "/api/token/"),
        ("TRACE", "/api/products/"),
    ],
)
def test_methods_the_api_does_not_offer_are_405(client, user_headers, staff_headers, world, method, path):
    for headers in (user_headers, staff_headers):
        response = client.open(_url(path, world), method=method, json={}, headers=headers)
        assert_error(response, 405)
        assert method not in response.headers["Allow"]


def test_a_method_override_header_is_not_obeyed(app, client, user_headers, world):
    for override in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        response = client.post(
            f"/api/products/{world['product_id']}/", json={}, headers={**user_headers, override: "DELETE"}
        )
        assert_error(response, 405)

    with app.app_context():
        assert db.session.get(Product, world["product_id"]).hidden is False


def test_head_and_options_on_a_staff_route_do_no_work(app, client, user_headers, world):
    url = f"/api/products/{world['product_id']}/"

    assert client.head(url, headers=user_headers).status_code == 200  # HEAD is a GET without a body
    options = client.options(url, headers=user_headers)

    assert options.status_code == 200 and "DELETE" in options.headers["Allow"]
    with app.app_context():
        assert db.session.get(Product, world["product_id"]).hidden is False
