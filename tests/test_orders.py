"""Orders through the HTTP API: placing, validating, reading, the lifecycle, Idempotency-Key, BOLA."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from shop.extensions import db
from shop.orders.models import EmailOutbox, Order, OrderItem
from shop.products.models import Product
from tests.conftest import bearer, token_for
from tests.factories import make_category, make_product, make_user
from tests.querycount import count_statements


@pytest.fixture
def products(app):
    with app.app_context():
        accessories = make_category(name="Accessories", description="Computer accessories and peripherals.")
        mouse = make_product(
            accessories,
            name="Wireless Mouse",
            description="Ergonomic wireless mouse with adjustable DPI.",
            price="25.99",
            stock=150,
        )
        keyboard = make_product(
            accessories,
            name="Mechanical Keyboard",
            description="Backlit mechanical keyboard with Cherry MX switches.",
            price="75.50",
            stock=80,
        )
        return mouse.id, keyboard.id


def _counts(app) -> tuple[int, int, dict[int, int]]:
    with app.app_context():
        orders = db.session.scalar(select(func.count()).select_from(Order))
        items = db.session.scalar(select(func.count()).select_from(OrderItem))
        stock = dict(db.session.execute(select(Product.id, Product.stock)).all())
        return orders, items, stock


def _order(client, headers, items, **kwargs):
    return client.post("/api/orders/", json={"items": items}, headers=headers, **kwargs)


def test_place_order_answers_the_seed_c3_shape(client, app, user_headers, products):
    mouse, keyboard = products

    response = _order(
        client, user_headers, [{"product_id": mouse, "quantity": 2}, {"product_id": keyboard, "quantity": 1}]
    )

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "user", "items", "total", "status", "created_at", "updated_at", "is_completed"}
    assert body["user"] == "alice" and body["status"] == "pending" and body["is_completed"] is False
    assert body["total"] == "127.48"  # 2 * 25.99 + 75.50, exactly
    first = body["items"][0]
    assert set(first) == {"id", "product", "quantity", "unit_price"}
    assert first["quantity"] == 2 and first["unit_price"] == "25.99"
    assert first["product"]["name"] == "Wireless Mouse" and first["product"]["stock"] == 148
    assert first["product"]["category"] == {
        "id": first["product"]["category"]["id"],
        "name": "Accessories",
        "description": "Computer accessories and peripherals.",
    }
    assert body["created_at"].endswith("Z")
    orders, items, stock = _counts(app)
    assert (orders, items) == (1, 2)
    assert stock == {mouse: 148, keyboard: 79}
    with app.app_context():
        outbox = db.session.scalars(select(EmailOutbox)).all()
        assert [row.order_id for row in outbox] == [body["id"]]


def test_not_enough_stock_is_409_with_per_item_figures_and_takes_nothing(client, app, user_headers, products):
    mouse, keyboard = products

    response = _order(
        client, user_headers, [{"product_id": mouse, "quantity": 1}, {"product_id": keyboard, "quantity": 81}]
    )

    assert response.status_code == 409
    body = response.get_json()
    assert body["errors"]["items"] == [{"product_id": keyboard, "requested": 81, "available": 80}]
    assert _counts(app) == (0, 0, {mouse: 150, keyboard: 80})


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"items": []}, id="empty"),
        pytest.param({"items": None}, id="null"),
        pytest.param({}, id="missing"),
        pytest.param({"items": [{"product_id": 2**70, "quantity": 1}]}, id="product-id-huge"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": 0}]}, id="zero"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": -1}]}, id="negative"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": 1001}]}, id="too-many"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": "2"}]}, id="string"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": 2.5}]}, id="fraction"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": True}]}, id="boolean"),
        pytest.param({"items": [{"product_id": "MOUSE"}]}, id="no-quantity"),
        pytest.param({"items": [{"product_id": 999999, "quantity": 1}]}, id="unknown-product"),
        pytest.param(
            {"items": [{"product_id": "MOUSE", "quantity": 1}, {"product_id": "MOUSE", "quantity": 2}]},
            id="duplicate-product",
        ),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": 1, "price": "0.01"}]}, id="item-price"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": 1}], "status": "completed"}, id="status"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": 1}], "total": "0.00"}, id="total"),
        pytest.param({"items": [{"product_id": "MOUSE", "quantity": 1}], "user": "boss"}, id="user"),
    ],
)
def test_bad_order_is_422_and_writes_nothing(client, app, user_headers, products, payload):
    payload = copy.deepcopy(payload)
    for line in payload.get("items") or []:
        if line.get("product_id") == "MOUSE":
            line["product_id"] = products[0]
    before = _counts(app)

    response = client.post("/api/orders/", json=payload, headers=user_headers)

    assert response.status_code == 422, response.get_json()
    assert response.get_json()["code"] == 422 and response.get_json()["errors"]
    assert _counts(app) == before


def test_product_id_given_as_string_is_422(client, app, user_headers, products):
    response = _order(client, user_headers, [{"product_id": str(products[0]), "quantity": 1}])

    assert response.status_code == 422


def test_more_than_100_items_is_422(client, app, user_headers):
    with app.app_context():
        category = make_category()
        ids = [make_product(category).id for _ in range(101)]
    before = _counts(app)

    response = _order(client, user_headers, [{"product_id": pid, "quantity": 1} for pid in ids])

    assert response.status_code == 422
    assert _counts(app) == before


def test_hidden_product_cannot_be_ordered(client, app, user_headers):
    with app.app_context():
        hidden = make_product(hidden=True, stock=5).id

    response = _order(client, user_headers, [{"product_id": hidden, "quantity": 1}])

    assert response.status_code == 422
    assert _counts(app)[0] == 0


def test_anonymous_cannot_order(client, products):
    response = client.post("/api/orders/", json={"items": [{"product_id": products[0], "quantity": 1}]})

    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_list_own_orders_newest_first_and_paginated(client, app, user_headers, staff_headers, products):
    mouse, keyboard = products
    first = _order(client, user_headers, [{"product_id": mouse, "quantity": 1}]).get_json()
    second = _order(client, user_headers, [{"product_id": keyboard, "quantity": 1}]).get_json()
    _order(client, staff_headers, [{"product_id": mouse, "quantity": 1}])

    mine = client.get("/api/orders/", headers=user_headers)

    assert mine.status_code == 200
    assert [order["id"] for order in mine.get_json()] == [second["id"], first["id"]]
    assert '"total": 2' in mine.headers["X-Pagination"]
    page = client.get("/api/orders/?page_size=1&page=2", headers=user_headers).get_json()
    assert [order["id"] for order in page] == [first["id"]]


def test_staff_see_every_order_and_filter(client, user_headers, staff_headers, products):
    mouse, _ = products
    alices = _order(client, user_headers, [{"product_id": mouse, "quantity": 1}]).get_json()
    _order(client, staff_headers, [{"product_id": mouse, "quantity": 1}])

    everyone = client.get("/api/orders/", headers=staff_headers).get_json()
    just_alice = client.get("/api/orders/?user=alice", headers=staff_headers).get_json()
    paid = client.get("/api/orders/?status=paid", headers=staff_headers).get_json()

    assert len(everyone) == 2
    assert [order["id"] for order in just_alice] == [alices["id"]]
    assert paid == []
    assert client.get("/api/orders/?status=lost", headers=staff_headers).status_code == 422


def test_customer_user_filter_cannot_widen_the_list(client, user_headers, staff_headers, products):
    _order(client, staff_headers, [{"product_id": products[0], "quantity": 1}])

    assert client.get("/api/orders/?user=boss", headers=user_headers).get_json() == []


def test_order_detail(client, user_headers, products):
    created = _order(client, user_headers, [{"product_id": products[0], "quantity": 3}]).get_json()

    response = client.get(f"/api/orders/{created['id']}/", headers=user_headers)

    assert response.status_code == 200
    assert response.get_json()["items"][0]["quantity"] == 3


def test_another_users_order_is_404_on_read_cancel_and_patch(client, app, user_headers, products):
    with app.app_context():
        make_user(username="mallory", email="mallory@example.com", password="mallory-password")
    mallory = bearer(token_for(client, "mallory", "mallory-password")["access"])
    created = _order(client, user_headers, [{"product_id": products[0], "quantity": 1}]).get_json()
    url = f"/api/orders/{created['id']}/"

    assert client.get(url, headers=mallory).status_code == 404
    assert client.post(url + "cancel/", headers=mallory).status_code == 404
    assert client.patch(url, json={"status": "paid"}, headers=mallory).status_code == 404
    assert client.get(url, headers=user_headers).get_json()["status"] == "pending"


def test_owner_cannot_patch_status(client, user_headers, products):
    created = _order(client, user_headers, [{"product_id": products[0], "quantity": 1}]).get_json()

    response = client.patch(f"/api/orders/{created['id']}/", json={"status": "paid"}, headers=user_headers)

    assert response.status_code == 403


def test_owner_cancels_pending_order_and_stock_returns(client, app, user_headers, products):
    mouse, keyboard = products
    created = _order(
        client, user_headers, [{"product_id": mouse, "quantity": 5}, {"product_id": keyboard, "quantity": 2}]
    ).get_json()

    response = client.post(f"/api/orders/{created['id']}/cancel/", headers=user_headers)

    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    assert _counts(app)[2] == {mouse: 150, keyboard: 80}
    again = client.post(f"/api/orders/{created['id']}/cancel/", headers=user_headers)
    assert again.status_code == 409
    assert _counts(app)[2] == {mouse: 150, keyboard: 80}


def test_lifecycle_by_staff_and_wrong_transitions(client, app, user_headers, staff_headers, products):
    created = _order(client, user_headers, [{"product_id": products[0], "quantity": 1}]).get_json()
    url = f"/api/orders/{created['id']}/"

    assert client.patch(url, json={"status": "shipped"}, headers=staff_headers).status_code == 409
    assert client.patch(url, json={"status": "paid"}, headers=staff_headers).get_json()["status"] == "paid"
    # the owner may no longer cancel a paid order; staff may
    assert client.post(url + "cancel/", headers=user_headers).status_code == 409
    assert client.patch(url, json={"status": "shipped"}, headers=staff_headers).status_code == 200
    assert client.post(url + "cancel/", headers=staff_headers).status_code == 409
    done = client.patch(url, json={"status": "completed"}, headers=staff_headers).get_json()
    assert done["status"] == "completed" and done["is_completed"] is True
    assert client.patch(url, json={"status": "pending"}, headers=staff_headers).status_code == 409
    assert client.patch(url, json={"status": "cancelled"}, headers=staff_headers).status_code == 409
    assert client.patch(url, json={"status": "lost"}, headers=staff_headers).status_code == 422
    assert client.patch(url, json={"status": "completed", "total": "0"}, headers=staff_headers).status_code == 422


def test_staff_cancel_paid_order_returns_stock(client, app, user_headers, staff_headers, products):
    mouse, _ = products
    created = _order(client, user_headers, [{"product_id": mouse, "quantity": 4}]).get_json()
    url = f"/api/orders/{created['id']}/"
    client.patch(url, json={"status": "paid"}, headers=staff_headers)

    response = client.post(url + "cancel/", headers=staff_headers)

    assert response.status_code == 200
    assert _counts(app)[2][mouse] == 150


def test_idempotency_key_replays_the_first_answer(client, app, user_headers, products):
    headers = {**user_headers, "Idempotency-Key": "order-123"}
    lines = [{"product_id": products[0], "quantity": 2}]

    first = _order(client, headers, lines)
    second = _order(client, headers, lines)

    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json() == first.get_json()
    assert _counts(app)[0] == 1
    assert _counts(app)[2][products[0]] == 148


def test_idempotency_key_with_another_body_is_422(client, app, user_headers, products):
    headers = {**user_headers, "Idempotency-Key": "order-124"}
    _order(client, headers, [{"product_id": products[0], "quantity": 2}])

    response = _order(client, headers, [{"product_id": products[0], "quantity": 3}])

    assert response.status_code == 422
    assert _counts(app)[0] == 1


def test_idempotency_key_is_scoped_to_the_user(client, app, user_headers, staff_headers, products):
    lines = [{"product_id": products[0], "quantity": 1}]

    mine = _order(client, {**user_headers, "Idempotency-Key": "same"}, lines)
    theirs = _order(client, {**staff_headers, "Idempotency-Key": "same"}, lines)

    assert mine.status_code == theirs.status_code == 201
    assert mine.get_json()["id"] != theirs.get_json()["id"]


def test_failed_order_frees_its_idempotency_key(client, app, user_headers, products):
    headers = {**user_headers, "Idempotency-Key": "retry-me"}
    lines = [{"product_id": products[0], "quantity": 151}]
    assert _order(client, headers, lines).status_code == 409
    with app.app_context():
        db.session.execute(db.update(Product).where(Product.id == products[0]).values(stock=200))
        db.session.commit()

    retried = _order(client, headers, lines)

    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_idempotency_key_length_is_checked(client, app, user_headers, products, key):
    response = _order(client, {**user_headers, "Idempotency-Key": key}, [{"product_id": products[0], "quantity": 1}])

    assert response.status_code == 422
    assert _counts(app)[0] == 0


def test_order_total_is_exact_for_many_cents(client, app, user_headers):
    with app.app_context():
        cheap = make_product(price="0.10", stock=1000).id

    body = _order(client, user_headers, [{"product_id": cheap, "quantity": 3}]).get_json()

    assert body["total"] == "0.30"
    with app.app_context():
        assert db.session.get(Order, body["id"]).total == Decimal("0.30")


@pytest.mark.parametrize("path", ["/api/orders/", "/api/orders/?page_size=100"])
def test_listing_costs_the_same_statements_for_1_or_many_orders(client, app, user_headers, path):
    with app.app_context():
        category = make_category()
        ids = [make_product(category, stock=1000).id for _ in range(3)]
    lines = [{"product_id": pid, "quantity": 1} for pid in ids]

    def statements_for_listing() -> int:
        with count_statements(app) as statements:
            assert client.get(path, headers=user_headers).status_code == 200
        return len(statements)

    _order(client, user_headers, lines)
    one = statements_for_listing()
    for _ in range(24):
        _order(client, user_headers, lines)
    many = statements_for_listing()

    assert many == one
    assert one <= 6  # token user and blocklist, count, page, items with their products


def test_the_answer_is_what_a_later_get_of_the_order_shows(client, user_headers, products):
    mouse, keyboard = products
    lines = [{"product_id": keyboard, "quantity": 2}, {"product_id": mouse, "quantity": 1}]

    created = _order(client, {**user_headers, "Idempotency-Key": "same-as-get"}, lines)
    shown = client.get(f"/api/orders/{created.get_json()['id']}/", headers=user_headers)

    assert created.status_code == 201 and shown.status_code == 200
    assert created.get_data() == shown.get_data()  # same fields, same order, same values
    assert [item["product"]["id"] for item in created.get_json()["items"]] == [keyboard, mouse]


def test_an_order_is_few_statements_and_reads_its_buyer_once(client, app, user_headers, products):
    mouse, keyboard = products
    lines = [{"product_id": mouse, "quantity": 1}, {"product_id": keyboard, "quantity": 1}]
    _order(client, user_headers, lines)  # the first order of a shape compiles its statements

    with count_statements(app) as statements:
        response = _order(client, {**user_headers, "Idempotency-Key": "count-me"}, lines)

    assert response.status_code == 201
    statements = [" ".join(statement.split()) for statement in statements]
    # The token check reads the buyer (and, while Redis is not known complete, its session): nothing reads it again.
    assert sum(" FROM users " in statement for statement in statements) == 1
    order = [" ".join(s.split()[:3]) for s in statements if " FROM users " not in s and "user_sessions" not in s]
    # Then, only without a broker (as here), the email is sent in-process after the commit.
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        writes = ["WITH placed AS"]  # the order, its items and its outbox row in one statement
    else:
        writes = ["INSERT INTO orders", "INSERT INTO order_items", "INSERT INTO email_outbox"]
    assert order[: 3 + len(writes)] == [
        "INSERT INTO idempotency_keys",  # the key claimed in the order's transaction
        order[1] if order[1].startswith("WITH locked") else "UPDATE products SET",  # every line's stock at once
        *writes,
        "UPDATE idempotency_keys SET",  # the answer stored on the key
    ]


def test_an_order_whose_total_the_column_cannot_hold_is_422_and_takes_nothing(client, app, user_headers):
    with app.app_context():
        dear = make_product(price="99999999.99", stock=1000).id
    before = _counts(app)

    response = _order(client, {**user_headers, "Idempotency-Key": "too-dear"}, [{"product_id": dear, "quantity": 101}])

    assert response.status_code == 422 and response.get_json()["message"] == "The order is too large."
    assert _counts(app) == before
    retried = _order(client, {**user_headers, "Idempotency-Key": "too-dear"}, [{"product_id": dear, "quantity": 100}])
    assert retried.status_code == 201  # the refused order left its key free
