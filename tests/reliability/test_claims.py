"""Idempotency-Key claims left behind by a request that died, and the request that lost its claim.

A request that dies between claiming its key and answering (its worker killed, the database
gone) leaves an unanswered claim. Its client's retry must place the order, once, as soon as no
request works on the claim any more, not answer 409 for a minute.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from shop.core import idempotency
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders.models import IdempotencyKey, Order
from tests.conftest import is_postgres
from tests.factories import make_product


@pytest.fixture
def lines(app, user):
    with app.app_context():
        return [{"product_id": make_product(stock=10).id, "quantity": 1}]


def _claim(app, user_id: int, key: str, lines, age: timedelta) -> idempotency.Claim:
    """A claim taken `age` ago by a request that never answered."""
    with app.app_context():
        claimed = idempotency.claim(user_id, key, idempotency.fingerprint(lines))
        assert isinstance(claimed, idempotency.Claim)
        token = utcnow() - age
        db.session.execute(update(IdempotencyKey).where(IdempotencyKey.id == claimed.id).values(created_at=token))
        db.session.commit()
        return idempotency.Claim(claimed.id, token)


def _orders(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Order))


def test_the_retry_of_a_request_that_died_places_the_order_once(app, client, user, user_headers, lines):
    _claim(app, user.id, "died", lines, age=timedelta(seconds=61))

    first = client.post("/api/orders/", json={"items": lines}, headers={**user_headers, "Idempotency-Key": "died"})
    again = client.post("/api/orders/", json={"items": lines}, headers={**user_headers, "Idempotency-Key": "died"})

    assert first.status_code == 201, first.get_json()
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert _orders(app) == 1


def test_on_postgresql_an_unlocked_claim_is_taken_over_at_once_and_a_locked_one_is_in_flight(
    app, client, user, user_headers, lines
):
    if not is_postgres(app):
        pytest.skip("row locks tell a live claim from a dead one on PostgreSQL only (SQLite waits 60 s)")
    headers = {**user_headers, "Idempotency-Key": "live"}
    # Just claimed: its request may not have reached its write yet (the grace), so it is in flight.
    _claim(app, user.id, "fresh", lines, age=timedelta(0))
    just = client.post("/api/orders/", json={"items": lines}, headers={**user_headers, "Idempotency-Key": "fresh"})
    assert just.status_code == 409 and "still being processed" in just.get_json()["message"]

    claimed = _claim(app, user.id, "live", lines, age=timedelta(seconds=3))
    with app.app_context():
        # The write of a live request holds its claim's row lock.
        live = db.engine.connect()
        transaction = live.begin()
        live.execute(select(IdempotencyKey.id).where(IdempotencyKey.id == claimed.id).with_for_update())
        try:
            busy = client.post("/api/orders/", json={"items": lines}, headers=headers)
        finally:
            transaction.rollback()  # that request dies: its transaction ends, its claim stays
            live.close()

    assert busy.status_code == 409 and "still being processed" in busy.get_json()["message"]
    retried = client.post("/api/orders/", json={"items": lines}, headers=headers)
    assert retried.status_code == 201, retried.get_json()
    assert _orders(app) == 1


def test_a_request_whose_claim_was_taken_over_writes_nothing_and_frees_nothing(app, user, lines):
    claimed = _claim(app, user.id, "lost", lines, age=timedelta(seconds=61))
    with app.app_context():
        # Its retry took the claim over (a new token) while this request was still on its way.
        taken = idempotency.claim(user.id, "lost", idempotency.fingerprint(lines))
        assert isinstance(taken, idempotency.Claim) and taken.token != claimed.token

        with pytest.raises(idempotency.ClaimLost):
            idempotency.hold(claimed)
        db.session.rollback()
        with pytest.raises(idempotency.ClaimLost):
            idempotency.record(claimed, 201, b"{}")
        db.session.rollback()
        idempotency.release(claimed)  # not this request's to free any more

        row = db.session.get(IdempotencyKey, claimed.id)
        assert row is not None and row.status_code is None and row.created_at == taken.token
        idempotency.hold(taken)  # the retry's claim holds
        db.session.rollback()
