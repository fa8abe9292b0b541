"""Stock reservations that expire and caps on what one customer's unpaid orders hold (OWASP API6)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from shop.core.time import utcnow
from shop.extensions import db
from shop.orders import tasks
from shop.orders.models import Order, OrderStatus
from shop.products.models import Product
from tests.conftest import is_postgres
from tests.factories import make_product
from tests.security.conftest import assert_error


def _order(client: Any, headers: dict[str, str], product_id: int, quantity: int = 1) -> Any:
    return client.post(
        "/api/orders/", json={"items": [{"product_id": product_id, "quantity": quantity}]}, headers=headers
    )


def _stock(app: Flask, product_id: int) -> int:
    with app.app_context():
        return db.session.get(Product, product_id).stock


def _age(app: Flask, order_id: int, minutes: int) -> None:
    with app.app_context():
        db.session.execute(
            update(Order).where(Order.id == order_id).values(created_at=utcnow() - timedelta(minutes=minutes))
        )
        db.session.commit()


@pytest.fixture
def product(app: Flask) -> int:
    with app.app_context():
        return make_product(stock=5000, price="1.00").id


def test_one_customer_cannot_hold_more_than_five_unpaid_orders(client, user_headers, staff_headers, product) -> None:
    for _ in range(5):
        assert _order(client, user_headers, product).status_code == 201

    sixth = _order(client, user_headers, product)

    body = assert_error(sixth, 409)
    assert "5 unpaid orders" in body["message"] and body["errors"]["pending_orders"] == 5
    assert _order(client, staff_headers, product).status_code == 201  # another customer buys on


def test_one_customer_cannot_hold_more_than_the_unit_cap(app, client, user_headers, staff_headers, product) -> None:
    assert _order(client, user_headers, product, 1000).status_code == 201
    assert _order(client, user_headers, product, 1000).status_code == 201  # 2,000 units: the default cap

    third = _order(client, user_headers, product, 1)

    body = assert_error(third, 409)
    assert body["errors"]["pending_units"] == 2000 and "2000" in body["message"]
    assert _stock(app, product) == 3000  # the refused order took nothing
    assert _order(client, staff_headers, product, 1000).status_code == 201


def test_paying_or_cancelling_frees_the_customers_caps(client, user_headers, staff_headers, product) -> None:
    ids = [_order(client, user_headers, product).get_json()["id"] for _ in range(5)]
    assert_error(_order(client, user_headers, product), 409)

    client.patch(f"/api/orders/{ids[0]}/", json={"status": "paid"}, headers=staff_headers)
    client.post(f"/api/orders/{ids[1]}/cancel/", headers=user_headers)

    assert [_order(client, user_headers, product).status_code for _ in range(2)] == [201, 201]


def test_an_unpaid_order_gives_its_stock_back_after_its_reservation_time(app, client, user_headers, product) -> None:
    kept = _order(client, user_headers, product, 10).get_json()["id"]
    expired = _order(client, user_headers, product, 7).get_json()["id"]
    _age(app, expired, 16)  # past PENDING_ORDER_MINUTES (15)
    _age(app, kept, 14)

    with app.app_context():
        assert tasks.expire_pending_orders.delay().get() == 1
        again = tasks.expire_pending_orders.delay().get()

    assert again == 0
    assert _stock(app, product) == 5000 - 10  # returned exactly once
    statuses = {o["id"]: o["status"] for o in client.get("/api/orders/", headers=user_headers).get_json()}
    assert statuses == {kept: "pending", expired: "cancelled"}


def _race(app: Flask, order_id: int, user_headers: dict[str, str], staff_headers: dict[str, str]) -> dict[str, Any]:
    """The expiry task, a staff payment and the owner's cancellation of one order, released at once."""
    barrier = threading.Barrier(3)
    answers: dict[str, Any] = {}

    def expire() -> None:
        with app.app_context():
            barrier.wait()
            answers["expire"] = tasks.expire_pending_orders.delay().get()

    def pay() -> None:
        barrier.wait()
        paid = app.test_client().patch(f"/api/orders/{order_id}/", json={"status": "paid"}, headers=staff_headers)
        answers["pay"] = paid.status_code

    def cancel() -> None:
        barrier.wait()
        answers["cancel"] = app.test_client().post(f"/api/orders/{order_id}/cancel/", headers=user_headers).status_code

    threads = [threading.Thread(target=work) for work in (expire, pay, cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_expiry_racing_payment_and_cancellation_returns_stock_exactly_once(
    app, client, user_headers, staff_headers, product
) -> None:
    """Also caught: a status change read the order before locking it, and paid an order just cancelled."""
    if not is_postgres(app):
        pytest.skip("concurrent writers need PostgreSQL's row locks; SQLite has one writer at a time")
    for _ in range(8):
        order_id = _order(client, user_headers, product, 3).get_json()["id"]
        _age(app, order_id, 20)
        before = _stock(app, product)

        answers = _race(app, order_id, user_headers, staff_headers)

        with app.app_context():
            status = db.session.get(Order, order_id).status
        returned = _stock(app, product) - before
        assert (status, returned) in {(OrderStatus.CANCELLED, 3), (OrderStatus.PAID, 0)}, (status, returned, answers)
        if status == OrderStatus.PAID:
            assert answers["pay"] == 200 and answers["expire"] == 0 and answers["cancel"] == 409, answers
            client.post(f"/api/orders/{order_id}/cancel/", headers=staff_headers)  # free the customer's caps
        else:
            assert [answers["expire"] == 1, answers["cancel"] == 200].count(True) == 1 and answers["pay"] == 409
