"""Fixtures for the attacks: an app with rate limits on, a Redis of the test's own, helpers to read the spec."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from shop import create_app
from shop.extensions import db, limiter
from tests.conftest import app_config
from tests.redis_server import RedisServer

ERROR_KEYS = {"code", "status", "message"}
METHODS = ("get", "post", "put", "patch", "delete")


def assert_error(response: Any, code: int) -> dict[str, Any]:
    """The common error body, as JSON, with this status."""
    assert response.status_code == code, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) >= ERROR_KEYS and body["code"] == code, body
    return body


def spec_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: `/<int(max=9):id>/` → `/{id}/`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) of an OpenAPI document."""
    return [
        (method, path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def concrete(path: str, value: int = 1) -> str:
    """An OpenAPI path with every parameter filled in."""
    return re.sub(r"\{[^}]+\}", str(value), path)


@pytest.fixture
def spec(client: Any) -> dict[str, Any]:
    return client.get("/api/openapi.json").get_json()


@pytest.fixture
def limited_app(app: Flask) -> Iterator[Callable[..., Flask]]:
    """Make an app with rate limits on (in-process counters unless told otherwise), on the test database.

    flask-limiter keeps its state on the one `limiter` object, so afterwards it is bound to the
    session app again (limits off) and forgets any storage outage a test caused.
    """

    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        config = {"RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://", "RATELIMIT_STORAGE_OPTIONS": {}}
        config.update(overrides)
        made.append(create_app(app_config(**config)))
        return made[-1]

    yield make
    limiter.init_app(app)
    limiter._storage_dead = False  # a storage outage of one test must not leak into the next
    for limited in made:
        dispose(limited)


def dispose(app: Flask) -> None:
    """Close the database connections of an app made for one test."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def redis_app(app: Flask, private_redis: RedisServer) -> Iterator[Flask]:
    """An app whose cache and token blocklist live in the private Redis (rate limits off)."""
    url = private_redis.url(4)
    redis_backed = create_app(
        app_config(
            REDIS_URL=url,
            CACHE_TYPE="RedisCache",
            CACHE_REDIS_URL=url,
            CACHE_KEY_PREFIX="security-tests:",
            CACHE_OPTIONS={"socket_timeout": 0.25, "socket_connect_timeout": 0.25},
        )
    )
    yield redis_backed
    dispose(redis_backed)
