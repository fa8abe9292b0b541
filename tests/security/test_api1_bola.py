"""OWASP API1:2023 Broken Object Level Authorization: one customer reaching another's orders,
profile, tokens or idempotent replays, by id or by any other handle the API takes."""

from __future__ import annotations

from typing import Any

import pytest

from shop.extensions import db
from shop.orders.models import Order
from shop.products.models import Product
from shop.users.models import User
from tests.conftest import PASSWORD, bearer, token_for
from tests.factories import make_product, make_user
from tests.security.conftest import assert_error, spec_path


@pytest.fixture
def mallory(app: Any, client: Any) -> dict[str, str]:
    with app.app_context():
        make_user(username="mallory", email="mallory@example.com", password=PASSWORD)
    return bearer(token_for(client, "mallory")["access"])


@pytest.fixture
def product_id(app: Any) -> int:
    with app.app_context():
        return make_product(price="10.00", stock=10).id


def _place(client: Any, headers: dict[str, str], product_id: int) -> dict[str, Any]:
    response = client.post("/api/orders/", json={"items": [{"product_id": product_id, "quantity": 2}]}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _stock(app: Any, product_id: int) -> int:
    with app.app_context():
        return db.session.get(Product, product_id).stock


def test_another_customers_order_is_indistinguishable_from_a_missing_one(client, user_headers, mallory, product_id):
    alices = _place(client, user_headers, product_id)
    missing = 2_000_000_000

    for path in ("/api/orders/{}/", "/api/orders/{}/cancel/"):
        method = "GET" if path.endswith("}/") else "POST"
        theirs = client.open(path.format(alices["id"]), method=method, headers=mallory)
        nobodys = client.open(path.format(missing), method=method, headers=mallory)
        assert_error(theirs, 404)
        assert theirs.get_json() == nobodys.get_json()
    patched = client.patch(f"/api/orders/{alices['id']}/", json={"status": "cancelled"}, headers=mallory)
    assert_error(patched, 404)


def test_a_failed_attack_changes_nothing(app, client, user_headers, mallory, product_id):
    alices = _place(client, user_headers, product_id)

    client.post(f"/api/orders/{alices['id']}/cancel/", headers=mallory)
    client.patch(f"/api/orders/{alices['id']}/", json={"status": "paid"}, headers=mallory)

    assert client.get(f"/api/orders/{alices['id']}/", headers=user_headers).get_json()["status"] == "pending"
    assert _stock(app, product_id) == 8


def test_order_lists_show_only_the_callers_orders_whatever_the_filters(client, user_headers, mallory, product_id):
    alices = _place(client, user_headers, product_id)
    mallorys = _place(client, mallory, product_id)

    for query in ("", "?user=alice", "?user=mallory&status=pending", "?page_size=100"):
        ids = [order["id"] for order in client.get(f"/api/orders/{query}", headers=mallory).get_json()]
        assert alices["id"] not in ids, query
    assert [order["id"] for order in client.get("/api/orders/", headers=mallory).get_json()] == [mallorys["id"]]


def test_an_idempotency_key_never_replays_another_customers_order(app, client, user_headers, mallory, product_id):
    key = {"Idempotency-Key": "checkout-42"}
    alices = _place(client, {**user_headers, **key}, product_id)

    # Mallory sends alice's key with alice's exact body: a new order of her own, not alice's replayed.
    response = client.post(
        "/api/orders/", json={"items": [{"product_id": product_id, "quantity": 2}]}, headers={**mallory, **key}
    )

    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    body = response.get_json()
    assert body["id"] != alices["id"] and body["user"] == "mallory"
    with app.app_context():
        assert db.session.get(Order, alices["id"]).user.username == "alice"


def test_there_is_no_route_to_another_users_profile(app, client, user, mallory):
    profile_rules = [rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/users/")]

    assert sorted(spec_path(rule) for rule in profile_rules) == [
        "/api/users/",
        "/api/users/me/",
        "/api/users/me/password/",
        "/api/users/me/sessions/revoke/",
        "/api/users/{user_id}/",
    ]
    # Another user's record is an admin's business only.
    assert_error(client.get(f"/api/users/{user.id}/", headers=mallory), 403)
    assert_error(client.patch(f"/api/users/{user.id}/", json={"is_active": False}, headers=mallory), 403)
    assert_error(client.get("/api/users/alice/", headers=mallory), 404)
    assert_error(client.patch("/api/users/alice/", json={"email": "owned@example.com"}, headers=mallory), 404)
    with app.app_context():
        assert db.session.get(User, user.id).is_active


def test_a_profile_update_only_ever_touches_the_callers_row(app, client, user, mallory):
    for body in ({"id": user.id, "email": "owned@example.com"}, {"username": "alice", "email": "owned@example.com"}):
        assert_error(client.patch("/api/users/me/", json=body, headers=mallory), 422)

    response = client.patch("/api/users/me/", json={"first_name": "Mal"}, headers=mallory)

    assert response.status_code == 200 and response.get_json()["username"] == "mallory"
    with app.app_context():
        alice = db.session.get(User, user.id)
        assert (alice.email, alice.first_name) == ("alice@example.com", "")


def test_a_refresh_token_of_another_user_cannot_be_revoked_or_spent_by_mallory(client, user, mallory):
    alices = token_for(client, "alice")

    response = client.post("/api/token/revoke/", json={"refresh": alices["refresh"]}, headers=mallory)

    assert_error(response, 401)
    assert client.post("/api/token/refresh/", json={"refresh": alices["refresh"]}).status_code == 200
