"""The email outbox relay: every owed email published once, whoever runs the relay and whenever the broker is down."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from flask_jwt_extended import create_access_token
from sqlalchemy import select

from shop import create_app
from shop.config import ConfigError, celery_config
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders import emails
from shop.orders.models import EmailOutbox
from tests.conftest import app_config, is_postgres
from tests.factories import make_product, make_user
from tests.smtp import free_port


@pytest.fixture
def down(app, monkeypatch) -> Any:
    """The shop configured with a broker that is down (nothing listens at its address)."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery prefers the variable to its configuration
    broker = celery_config(f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    shop = create_app(
        app_config(CELERY=broker, MAX_PENDING_ORDERS=0, MAX_ORDERS_PER_HOUR=0)
    )  # one buyer places dozens of orders
    yield shop
    app.extensions["celery"].set_current()
    app.extensions["celery"].set_default()


def _place(shop, count: int) -> list[int]:
    with shop.app_context():
        product = make_product(stock=1000).id
        headers = {"Authorization": f"Bearer {create_access_token(identity=make_user().id)}"}
    client = shop.test_client()
    ids = []
    for _ in range(count):
        response = client.post(
            "/api/orders/", json={"items": [{"product_id": product, "quantity": 1}]}, headers=headers
        )
        assert response.status_code == 201, response.get_json()
        ids.append(response.get_json()["id"])
    return ids


def _rows(shop) -> dict[int, EmailOutbox]:
    with shop.app_context():
        rows = db.session.scalars(select(EmailOutbox)).all()
        db.session.expunge_all()
        return {row.order_id: row for row in rows}


def _relay(shop) -> int:
    with shop.app_context():
        return shop.extensions["celery"].tasks["shop.orders.tasks.relay_outbox"].apply().result


def test_an_order_owes_its_email_from_commit_and_the_request_never_needs_the_broker(down):
    order_ids = _place(down, 3)

    rows = _rows(down)
    assert sorted(rows) == sorted(order_ids)
    assert all(row.status == "pending" and row.next_attempt_at <= utcnow() for row in rows.values())


def test_a_relay_run_with_the_broker_down_leaves_every_email_owed(down):
    order_ids = _place(down, 3)

    assert _relay(down) == 0

    rows = _rows(down)
    assert all(rows[order_id].status == "pending" for order_id in order_ids)
    assert all(rows[order_id].next_attempt_at <= utcnow() for order_id in order_ids), "owed for the next run"


def test_a_relay_run_twice_publishes_each_email_once(app, down):
    order_ids = _place(down, 5)

    with down.app_context():
        first = emails.take_owed()
        second = emails.take_owed()

    assert sorted(first.order_ids) == sorted(order_ids)
    assert second.order_ids == []
    assert first.product_ids and len(set(first.product_ids)) == len(first.product_ids)


def test_relays_running_at_once_take_each_email_once(app, down):
    if not is_postgres(app):
        pytest.skip("relays side by side need row locks (SKIP LOCKED); SQLite runs without a broker")
    order_ids = _place(down, 40)
    barrier = threading.Barrier(4)
    taken: list[list[int]] = []

    def relay() -> None:
        with down.app_context():
            barrier.wait()
            while owed := emails.take_owed(limit=3).order_ids:
                taken.append(owed)

    threads = [threading.Thread(target=relay) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    counts = Counter(order_id for batch in taken for order_id in batch)
    assert sorted(counts) == sorted(order_ids)
    assert set(counts.values()) == {1}


def test_a_row_a_relay_holds_is_skipped_by_another(app, down):
    if not is_postgres(app):
        pytest.skip("SKIP LOCKED is PostgreSQL's")
    first, second = _place(down, 2)
    with down.app_context(), db.engine.connect() as holder:
        holder.begin()
        holder.execute(select(EmailOutbox.id).where(EmailOutbox.order_id == first).with_for_update())
        owed = emails.take_owed()
        holder.rollback()

    assert owed.order_ids == [second]


def test_without_a_broker_the_relay_sends_what_is_owed_in_process_once(app, down):
    order_ids = _place(down, 2)  # owed: placed where a broker was configured

    assert _relay(app) == 2  # the test app has no broker: the relay's tasks run in-process
    assert _relay(app) == 0
    rows = _rows(app)
    assert all(rows[order_id].status == "sent" and rows[order_id].attempts == 1 for order_id in order_ids)


def test_the_relay_refreshes_the_catalog_for_an_order_whose_process_died_before_telling_it(down, monkeypatch):
    with down.app_context():
        product = make_product(stock=10).id
        headers = {"Authorization": f"Bearer {create_access_token(identity=make_user().id)}"}
    client = down.test_client()
    assert client.get(f"/api/products/{product}/").get_json()["stock"] == 10  # cached now
    # The order commits, and its process dies before it tells the catalog cache.
    monkeypatch.setattr("shop.orders.services.catalog.stock_changed", lambda changes: None)
    order = client.post("/api/orders/", json={"items": [{"product_id": product, "quantity": 3}]}, headers=headers)
    assert order.status_code == 201
    monkeypatch.undo()
    stale = client.get(f"/api/products/{product}/").get_json()["stock"]

    _relay(down)  # even with the broker down

    assert stale == 10  # the window the relay closes
    assert client.get(f"/api/products/{product}/").get_json()["stock"] == 7


@pytest.mark.parametrize(("value", "every"), [("", 1.0), ("0.2", 0.2), ("3", 3.0)])
def test_beat_runs_the_relay_every_outbox_relay_seconds(value, every):
    schedule = celery_config("amqp://", {"OUTBOX_RELAY_SECONDS": value})["beat_schedule"]["relay-email-outbox"]

    assert schedule["task"] == "shop.orders.tasks.relay_outbox" and schedule["schedule"] == every


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_an_outbox_relay_period_that_is_not_a_positive_number_is_refused(value):
    with pytest.raises(ConfigError, match="OUTBOX_RELAY_SECONDS"):
        celery_config("amqp://", {"OUTBOX_RELAY_SECONDS": value})
