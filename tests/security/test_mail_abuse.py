"""The shop cannot be made a mailer: orders (each with its confirmation) per customer per hour are capped,
and whatever a person typed stays on its line of the email."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from shop.extensions import db
from shop.orders.emails import build_message
from shop.orders.models import EmailOutbox, Order
from shop.users.models import User
from tests.factories import make_product
from tests.security.conftest import assert_error


def test_place_and_cancel_in_a_loop_stops_at_the_hourly_order_cap(app: Flask, client, user, user_headers) -> None:
    with app.app_context():
        product = make_product(stock=1000).id
    line = {"items": [{"product_id": product, "quantity": 1}]}

    for _ in range(30):  # MAX_ORDERS_PER_HOUR
        order = client.post("/api/orders/", json=line, headers=user_headers)
        assert order.status_code == 201
        assert client.post(f"/api/orders/{order.get_json()['id']}/cancel/", headers=user_headers).status_code == 200
    refused = client.post("/api/orders/", json=line, headers=user_headers)

    body = assert_error(refused, 429)
    assert "30 orders in the last hour" in body["message"] and int(refused.headers["Retry-After"]) > 0
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(EmailOutbox)) == 30  # no 31st email
        assert db.session.get(Order, 30) is not None and db.session.get(Order, 31) is None


def test_a_name_stored_before_the_name_rules_stays_on_its_line_of_the_email(app: Flask, client, user, user_headers):
    with app.app_context():
        product = make_product(stock=5, name="Mug\r\nBcc: victim@example.com").id
        db.session.get(User, user.id).first_name = "Ann\nVisit https://evil.example\x1b[2J"
        db.session.commit()
    order_id = client.post(
        "/api/orders/", json={"items": [{"product_id": product, "quantity": 1}]}, headers=user_headers
    ).get_json()["id"]

    with app.app_context():
        body = build_message(db.session.get(Order, order_id)).get_content()

    lines = body.splitlines()
    assert lines[0] == "Dear Ann Visit https://evil.example [2J,"
    assert "- Mug Bcc: victim@example.com (Quantity: 1)" in lines
    assert not any(line.startswith(("Bcc", "Visit")) for line in lines)
