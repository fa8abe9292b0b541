"""Idempotency-Key claims when the request holding a key dies, or is still running.

A key is claimed inside the order's own transaction, so a request that dies (its worker killed,
the database gone) takes its claim with it: its client's retry places the order, once, at once.
A repeat sent while the first request runs answers 409 at once, without waiting for it; once the
first has committed, a repeat replays its answer.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from shop import create_app
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders import idempotency
from shop.orders.models import IdempotencyKey, Order
from tests.conftest import app_config, is_postgres
from tests.factories import make_product


@pytest.fixture
def lines(app, user):
    with app.app_context():
        return [{"product_id": make_product(stock=10).id, "quantity": 1}]


def _orders(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Order))


def _post(client, headers: dict[str, str], key: str, lines) -> Any:
    return client.post("/api/orders/", json={"items": lines}, headers={**headers, "Idempotency-Key": key})


def _in_thread(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("response", call()), daemon=True)
    thread.start()
    return thread, result


def _claim(connection: Any, user_id: int, key: str, lines) -> int:
    """A request's claim of `key`, in `connection`'s open transaction, as the order's first statement."""
    claimed = idempotency.claim(connection, user_id, key, idempotency.fingerprint(lines), utcnow())
    assert isinstance(claimed, int)
    return claimed


def _patient() -> Any:
    """The shop with no statement timeout: a repeat that waited on the first request's row would wait for good."""
    return create_app(app_config(SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": "-c statement_timeout=0"}}))


def _answered_while_held(shop: Any, headers: dict[str, str], key: str, lines) -> Any:
    """A repeat's answer, given while the caller still holds the first request's transaction open."""
    thread, result = _in_thread(lambda: _post(shop.test_client(), headers, key, lines))
    thread.join(30)
    with shop.app_context():
        db.engine.dispose()
    assert "response" in result, "the repeat waited for the first request instead of answering"
    return result["response"]


def _assert_in_flight(response: Any) -> None:
    """409 in the common error body: the first request is still being processed."""
    assert response.status_code == 409, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == 409 and body["status"] == "Conflict" and body["message"] == idempotency.IN_FLIGHT
    assert "Idempotent-Replayed" not in response.headers


def test_the_retry_of_a_request_that_died_places_the_order_once(app, client, user, user_headers, lines):
    with app.app_context(), db.engine.connect() as dying:
        # A request claimed the key in its order's transaction, then died before committing.
        dying.begin()
        claimed = idempotency.claim(dying, user.id, "died", idempotency.fingerprint(lines), utcnow())
        assert isinstance(claimed, int)
        dying.rollback()

    first = _post(client, user_headers, "died", lines)
    again = _post(client, user_headers, "died", lines)

    assert first.status_code == 201, first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert _orders(app) == 1


def test_a_retry_sent_while_the_dying_request_still_holds_the_key_is_409_then_places_the_order_when_it_dies(
    app, user, user_headers, lines
):
    if not is_postgres(app):
        pytest.skip("SQLite has one writer at a time: a retry waits for the held transaction instead")
    with app.app_context():
        dying = db.engine.connect()
        dying.begin()
        _claim(dying, user.id, "killed", lines)
        try:
            early = _answered_while_held(_patient(), user_headers, "killed", lines)
        finally:
            dying.close()  # the worker is killed: its connection drops, its transaction rolls back

    _assert_in_flight(early)
    retried = _post(app.test_client(), user_headers, "killed", lines)
    assert retried.status_code == 201, retried.get_json()
    assert "Idempotent-Replayed" not in retried.headers
    assert _orders(app) == 1


def test_a_repeat_sent_while_the_first_request_runs_is_409_at_once_then_replays_its_answer(
    app, user, user_headers, lines
):
    if not is_postgres(app):
        pytest.skip("SQLite has one writer at a time: a repeat waits for the held transaction instead")
    with app.app_context():
        running = db.engine.connect()
        running.begin()
        key_id = _claim(running, user.id, "twice", lines)
        try:
            repeat = _answered_while_held(_patient(), user_headers, "twice", lines)
            idempotency.record(running, key_id, 201, b'{"id": 7}')
            running.commit()
        finally:
            running.close()

    _assert_in_flight(repeat)
    after = _post(app.test_client(), user_headers, "twice", lines)
    assert after.status_code == 201 and after.headers["Idempotent-Replayed"] == "true"
    assert after.get_data() == b'{"id": 7}'
    assert _orders(app) == 0  # neither repeat placed anything of its own


def test_a_claim_left_unanswered_by_an_earlier_version_is_taken_over(app, client, user, user_headers, lines):
    with app.app_context():
        # The shop's earlier versions committed a claim before the order's transaction.
        db.session.execute(
            insert(IdempotencyKey).values(
                user_id=user.id, key="legacy", request_hash=idempotency.fingerprint(lines), created_at=utcnow()
            )
        )
        db.session.commit()

    first = _post(client, user_headers, "legacy", lines)
    again = _post(client, user_headers, "legacy", lines)

    assert first.status_code == 201, first.get_json()
    assert again.status_code == 201 and again.get_json()["id"] == first.get_json()["id"]
    assert _orders(app) == 1


def test_a_repeat_held_up_by_an_earlier_versions_claim_is_told_the_first_is_in_flight(app, user, user_headers, lines):
    if not is_postgres(app):
        pytest.skip("the statement timeout is PostgreSQL's")
    impatient = create_app(
        app_config(SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": "-c statement_timeout=300"}})
    )
    with app.app_context():
        # An earlier version, still running during a deploy, holds a claim without the advisory lock:
        # the repeat's claim waits on its row, up to the statement timeout.
        running = db.engine.connect()
        running.begin()
        running.execute(
            insert(IdempotencyKey).values(
                user_id=user.id, key="slow", request_hash=idempotency.fingerprint(lines), created_at=utcnow()
            )
        )
        try:
            repeat = _post(impatient.test_client(), user_headers, "slow", lines)
        finally:
            running.close()

    _assert_in_flight(repeat)
    assert _orders(app) == 0
    with impatient.app_context():
        db.engine.dispose()
