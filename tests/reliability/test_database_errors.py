"""When the database cannot serve, the answer is 503 with Retry-After in the common error body.

Unreachable, every pooled connection busy past the pool timeout, a statement past its
statement_timeout: each is a 503 the client may retry, never a 500 and never a hang.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask_jwt_extended import create_access_token
from sqlalchemy import text

from shop import create_app
from shop.config import _engine_options
from shop.extensions import db
from tests.conftest import app_config, is_postgres
from tests.factories import make_product, make_user
from tests.smtp import free_port


@contextmanager
def other_app(app: Flask, **overrides: Any) -> Iterator[Flask]:
    """An app of its own for this test; the session's app is the current one again afterwards."""
    other = create_app(app_config(**overrides))
    try:
        yield other
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        app.extensions["celery"].set_current()
        app.extensions["celery"].set_default()


def _assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"].isdigit()
    body = response.get_json()
    assert body["code"] == 503 and body["status"] == "Service Unavailable" and "unavailable" in body["message"]


def test_an_unreachable_database_is_503_not_500(app: Flask) -> None:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    with other_app(app, SQLALCHEMY_DATABASE_URI=url, SQLALCHEMY_ENGINE_OPTIONS=_engine_options(url, {})) as down:
        client = down.test_client()
        _assert_unavailable(client.get("/api/products/"))
        _assert_unavailable(client.post("/api/token/", json={"username": "ada", "password": "x" * 12}))


def test_every_pooled_connection_busy_past_the_pool_timeout_is_503(app: Flask) -> None:
    with app.app_context():
        product = make_product().id
    pool = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2}
    with other_app(app, SQLALCHEMY_ENGINE_OPTIONS=pool) as small:
        with small.app_context():
            busy = db.engine.connect()  # the only connection, held by someone else
            try:
                _assert_unavailable(small.test_client().get(f"/api/products/{product}/"))
            finally:
                busy.close()
        assert small.test_client().get(f"/api/products/{product}/").status_code == 200


def test_a_statement_past_its_timeout_is_503_and_the_key_can_be_retried(app: Flask) -> None:
    if not is_postgres(app):
        pytest.skip("statement_timeout is PostgreSQL's")
    with app.app_context():
        product = make_product(stock=5).id
        headers = {
            "Authorization": f"Bearer {create_access_token(identity=make_user().id)}",
            "Idempotency-Key": "slow-1",
        }
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    options = _engine_options(url, {"DB_STATEMENT_TIMEOUT_MS": "300"})
    body = {"items": [{"product_id": product, "quantity": 1}]}
    with other_app(app, SQLALCHEMY_ENGINE_OPTIONS=options) as strict:
        client = strict.test_client()
        with app.app_context():
            # Another transaction holds the product's row: the order's lock wait runs past 300 ms.
            holder = db.engine.connect()
            transaction = holder.begin()
            holder.execute(text("SELECT id FROM products WHERE id = :id FOR UPDATE"), {"id": product})
            try:
                _assert_unavailable(client.post("/api/orders/", json=body, headers=headers))
            finally:
                transaction.rollback()
                holder.close()
        retried = client.post("/api/orders/", json=body, headers=headers)
    assert retried.status_code == 201, retried.get_json()
    assert "Idempotent-Replayed" not in retried.headers
