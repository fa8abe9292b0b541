"""Orders under real concurrency on PostgreSQL: never oversold, never deadlocked, never doubled."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask_jwt_extended import create_access_token
from sqlalchemy import func, insert, select

from shop.extensions import db
from shop.orders.models import Order, OrderItem
from shop.products.models import Product
from shop.users.models import User
from tests.conftest import is_postgres, need_service
from tests.factories import make_category, make_product


@pytest.fixture(autouse=True)
def _postgres(app):
    need_service("TEST_DATABASE_URL (PostgreSQL)", os.environ.get("TEST_DATABASE_URL"))
    assert is_postgres(app)


def _buyers(app, count: int) -> list[dict[str, str]]:
    """`count` customers with an access token each."""
    with app.app_context():
        rows = [
            {"username": f"buyer{n}", "email": f"buyer{n}@example.com", "password_hash": "!", "first_name": "B"}
            for n in range(count)
        ]
        ids = list(db.session.scalars(insert(User).returning(User.id), rows))
        db.session.commit()
        return [{"Authorization": f"Bearer {create_access_token(identity=user_id)}"} for user_id in ids]


def _together(app, calls: list[Callable[[Any], Any]]) -> list[Any]:
    """Run every call in its own thread, released together by a barrier; each gets its own client."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        client = app.test_client()
        barrier.wait()
        try:
            results[index] = calls[index](client)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _ordered_quantity(app, product_id: int) -> int:
    with app.app_context():
        return db.session.scalar(
            select(func.coalesce(func.sum(OrderItem.quantity), 0)).where(OrderItem.product_id == product_id)
        )


def _stock(app, product_id: int) -> int:
    with app.app_context():
        return db.session.get(Product, product_id).stock


def test_200_buyers_for_50_items_give_50_orders_and_150_conflicts(app):
    with app.app_context():
        product = make_product(stock=50).id
    buyers = _buyers(app, 200)

    def buy(headers: dict[str, str]) -> Callable[[Any], int]:
        return lambda client: (
            client.post(
                "/api/orders/", json={"items": [{"product_id": product, "quantity": 1}]}, headers=headers
            ).status_code
        )

    statuses = Counter(_together(app, [buy(headers) for headers in buyers]))

    assert statuses == {201: 50, 409: 150}
    assert _stock(app, product) == 0
    assert _ordered_quantity(app, product) == 50
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Order)) == 50


def test_crossed_orders_never_deadlock_a_client(app):
    with app.app_context():
        category = make_category()
        a = make_product(category, stock=1000).id
        b = make_product(category, stock=1000).id
    buyers = _buyers(app, 100)

    def buy(headers: dict[str, str], first: int, second: int) -> Callable[[Any], int]:
        items = [{"product_id": first, "quantity": 3}, {"product_id": second, "quantity": 2}]
        return lambda client: client.post("/api/orders/", json={"items": items}, headers=headers).status_code

    calls = [buy(h, a, b) if n % 2 else buy(h, b, a) for n, h in enumerate(buyers)]
    statuses = Counter(_together(app, calls))

    assert statuses == {201: 100}
    for product in (a, b):
        assert _stock(app, product) + _ordered_quantity(app, product) == 1000


def test_20_concurrent_posts_with_one_key_make_one_order(app):
    with app.app_context():
        product = make_product(stock=100).id
    headers = {**_buyers(app, 1)[0], "Idempotency-Key": "checkout-7f3a"}
    body = {"items": [{"product_id": product, "quantity": 2}]}

    responses = _together(
        app,
        [
            lambda client: (lambda r: (r.status_code, r.get_json()))(
                client.post("/api/orders/", json=body, headers=headers)
            )
        ]
        * 20,
    )

    statuses = Counter(status for status, _ in responses)
    assert set(statuses) <= {201, 409} and statuses[201] >= 1
    assert len({payload["id"] for status, payload in responses if status == 201}) == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Order)) == 1
    assert _stock(app, product) == 98


def test_concurrent_cancels_return_stock_once(app):
    with app.app_context():
        product = make_product(stock=10).id
    headers = _buyers(app, 1)[0]
    client = app.test_client()
    order = client.post("/api/orders/", json={"items": [{"product_id": product, "quantity": 4}]}, headers=headers)
    order_id = order.get_json()["id"]

    statuses = Counter(
        _together(app, [lambda c: c.post(f"/api/orders/{order_id}/cancel/", headers=headers).status_code] * 10)
    )

    assert statuses == {200: 1, 409: 9}
    assert _stock(app, product) == 10


def test_an_order_for_a_sold_out_product_is_refused_without_waiting_on_its_row(app):
    with app.app_context():
        product = make_product(stock=0).id
    headers = _buyers(app, 1)[0]
    result: dict[str, Any] = {}

    def buy() -> None:
        response = app.test_client().post(
            "/api/orders/", json={"items": [{"product_id": product, "quantity": 1}]}, headers=headers
        )
        result["status"], result["body"] = response.status_code, response.get_json()

    with app.app_context(), db.engine.connect() as writer:
        # A staff edit (or an order being cancelled) holds the product's row.
        writer.execute(select(Product.id).where(Product.id == product).with_for_update())
        thread = threading.Thread(target=buy)
        thread.start()
        thread.join(30)
        answered_while_held = not thread.is_alive()
        writer.rollback()
    thread.join(30)

    assert answered_while_held, "the refused order waited on the row lock"
    assert result["status"] == 409
    assert result["body"]["errors"]["items"] == [{"product_id": product, "requested": 1, "available": 0}]
