"""Server-Timing in development: statement count, database, cache and view time; nothing of it in production."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from shop import create_app
from shop.core import devtools
from shop.extensions import cache, db
from tests import conftest
from tests.conftest import bearer, token_for
from tests.factories import make_product
from tests.querycount import count_statements

TIMING = re.compile(
    r'^db;desc="(\d+) quer(?:y|ies)";dur=[\d.]+, cache;desc="(\d+) calls?";dur=[\d.]+, '
    r"view;dur=[\d.]+, total;dur=[\d.]+$"
)


def _dispose(app: Flask) -> None:
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture(scope="module")
def dev_app() -> Iterator[Flask]:
    app = create_app(conftest.app_config(APP_ENV="development", DEV_QUERY_BUDGET=20))

    @app.route("/cache-twice")
    def cache_twice() -> dict[str, Any]:
        cache.set("devtools-probe", 1)
        # SimpleCache answers get_many through get: still one call to the cache.
        return {"values": cache.get_many("devtools-probe", "devtools-missing")}

    yield app
    _dispose(app)


def test_development_response_counts_the_sql_statements_it_ran(dev_app, user):
    client = dev_app.test_client()
    headers = bearer(token_for(client, "alice")["access"])

    with count_statements(dev_app) as statements:
        response = client.get("/api/users/me/", headers=headers)

    assert response.status_code == 200
    match = TIMING.match(response.headers["Server-Timing"])
    assert match, response.headers["Server-Timing"]
    assert int(match.group(1)) == len(statements) >= 1


def test_a_cached_catalog_page_shows_cache_calls_and_no_statements(dev_app):
    with dev_app.app_context():
        make_product()
    client = dev_app.test_client()

    first = TIMING.match(client.get("/api/products/").headers["Server-Timing"])
    again = TIMING.match(client.get("/api/products/").headers["Server-Timing"])

    assert int(first.group(1)) >= 1 and int(first.group(2)) >= 1
    assert int(again.group(1)) == 0 and int(again.group(2)) >= 1


def test_every_development_response_has_the_header_even_errors(dev_app):
    response = dev_app.test_client().get("/api/no-such-page/")

    assert response.status_code == 404
    assert TIMING.match(response.headers["Server-Timing"]).group(1) == "0"


def test_cache_calls_are_counted_once_each(dev_app):
    response = dev_app.test_client().get("/cache-twice")

    assert response.get_json() == {"values": [1, None]}
    assert TIMING.match(response.headers["Server-Timing"]).group(2) == "2"


@pytest.mark.parametrize(("budget", "warned"), [(0, True), (100, False)])
def test_a_request_over_the_statement_budget_logs_a_warning(dev_app, user, caplog, budget, warned):
    client = dev_app.test_client()
    headers = bearer(token_for(client, "alice")["access"])
    dev_app.config["DEV_QUERY_BUDGET"] = budget
    try:
        with caplog.at_level(logging.WARNING, logger="shop.core.devtools"):
            client.get("/api/users/me/", headers=headers)
    finally:
        dev_app.config["DEV_QUERY_BUDGET"] = 20

    over = [r.getMessage() for r in caplog.records if "DEV_QUERY_BUDGET" in r.getMessage()]
    if warned:
        assert len(over) == 1 and over[0].startswith("GET /api/users/me/ ran ")
    else:
        assert over == []


def test_production_sends_no_server_timing_and_installs_nothing(monkeypatch, user):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "a-production-secret-for-this-test-0123456789")
    monkeypatch.setenv("JWT_SECRET_KEY", "another-production-secret-for-this-test-987")
    app = create_app(conftest.app_config())
    try:
        assert app.config["APP_ENV"] == "production"
        client = app.test_client()
        headers = bearer(token_for(client, "alice")["access"])

        response = client.get("/api/users/me/", headers=headers)

        assert response.status_code == 200
        assert "Server-Timing" not in response.headers
        # Off means absent from the hot path: no engine listener, no wrapped dispatch or cache backend.
        with app.app_context():
            engine = db.engine
        assert not event.contains(engine, "before_cursor_execute", devtools._before_cursor_execute)
        assert "dispatch_request" not in vars(app)
        assert "get" not in vars(app.extensions["cache"][cache])
        assert "devtools" not in app.extensions
    finally:
        _dispose(app)
