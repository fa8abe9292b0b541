"""Idempotency-Key claims when the request holding a key dies, or is still running.

A key is claimed inside the order's own transaction, so a request that dies (its worker killed,
the database gone) takes its claim with it: its client's retry places the order, once, at once.
A repeat sent while the first request runs waits for it and replays its answer.
"""

from __future__ import annotations

import threading
import time
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


def _waiting_on(app, holder: Any) -> bool:
    """Whether some connection waits on a lock held by `holder`'s transaction."""
    pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with app.app_context(), db.engine.connect() as probe:
        return bool(
            probe.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE %(pid)s = ANY(pg_blocking_pids(pid))", {"pid": pid}
            ).scalar()
        )


def _wait_for(condition: Any) -> None:
    for _ in range(300):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the repeat never waited on the key")


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


def test_a_retry_sent_while_the_dying_request_still_holds_the_key_places_the_order_when_it_dies(
    app, user, user_headers, lines
):
    if not is_postgres(app):
        pytest.skip("a second request waits on the first one's transaction where several run at once")
    with app.app_context():
        dying = db.engine.connect()
        dying.begin()
        idempotency.claim(dying, user.id, "killed", idempotency.fingerprint(lines), utcnow())
        thread, result = _in_thread(lambda: _post(app.test_client(), user_headers, "killed", lines))
        try:
            _wait_for(lambda: _waiting_on(app, dying))
        finally:
            dying.close()  # the worker is killed: its connection drops, its transaction rolls back
    thread.join(60)

    retried = result["response"]
    assert retried.status_code == 201, retried.get_json()
    assert "Idempotent-Replayed" not in retried.headers
    assert _orders(app) == 1


def test_a_repeat_sent_while_the_first_request_runs_replays_its_answer(app, user, user_headers, lines):
    if not is_postgres(app):
        pytest.skip("a second request waits on the first one's transaction where several run at once")
    with app.app_context():
        running = db.engine.connect()
        running.begin()
        key_id = idempotency.claim(running, user.id, "twice", idempotency.fingerprint(lines), utcnow())
        assert isinstance(key_id, int)
        thread, result = _in_thread(lambda: _post(app.test_client(), user_headers, "twice", lines))
        try:
            _wait_for(lambda: _waiting_on(app, running))
            idempotency.record(running, key_id, 201, b'{"id": 7}')
            running.commit()
        finally:
            running.close()
    thread.join(60)

    repeat = result["response"]
    assert repeat.status_code == 201 and repeat.headers["Idempotent-Replayed"] == "true"
    assert repeat.get_data() == b'{"id": 7}'
    assert _orders(app) == 0  # the repeat placed nothing of its own


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


def test_a_repeat_that_waits_past_the_statement_timeout_is_told_the_first_is_in_flight(app, user, user_headers, lines):
    if not is_postgres(app):
        pytest.skip("the statement timeout is PostgreSQL's")
    impatient = create_app(
        app_config(SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": "-c statement_timeout=300"}})
    )
    with app.app_context():
        running = db.engine.connect()
        running.begin()
        idempotency.claim(running, user.id, "slow", idempotency.fingerprint(lines), utcnow())
        try:
            repeat = _post(impatient.test_client(), user_headers, "slow", lines)
        finally:
            running.close()

    assert repeat.status_code == 409 and "still being processed" in repeat.get_json()["message"]
    assert _orders(app) == 0
    with impatient.app_context():
        db.engine.dispose()
