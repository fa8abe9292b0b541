"""The hot paths' shortcuts keep the shop's behaviour: a cached page in one Redis round trip, no cookie sessions.

Speed itself is measured by `make bench`, never asserted here.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import flask_jwt_extended.jwt_manager as manager
import flask_jwt_extended.utils as jwt_utils
import pytest
from flask import Flask, session
from flask_jwt_extended import create_access_token
from redis.connection import AbstractConnection

from shop import create_app
from shop.extensions import db, limiter
from tests.conftest import PASSWORD, app_config, bearer
from tests.factories import make_category, make_product, make_user
from tests.redis_server import RedisServer, commands_sent

ANONYMOUS = {"environ_base": {"REMOTE_ADDR": "198.51.100.7"}}


@pytest.fixture
def redis_shop(app: Flask, private_redis: RedisServer) -> Iterator[Callable[..., Flask]]:
    """Make an app whose catalog cache and rate limits both live in the private Redis, limits on."""
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        url = private_redis.url(4)
        options = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}
        config = {
            "REDIS_URL": url,
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_URL": url,
            "CACHE_KEY_PREFIX": f"perf-{uuid.uuid4().hex}:",
            "CACHE_OPTIONS": options,
            "RATELIMIT_ENABLED": True,
            "RATELIMIT_STORAGE_URI": url,
            "RATELIMIT_STORAGE_OPTIONS": options,
            "RATELIMIT_ANON": "100/minute",
        }
        made.append(create_app(app_config(**{**config, **overrides})))
        return made[-1]

    yield make
    limiter.init_app(app)  # the limiter is one object: back to the session's app, limits off
    limiter._storage_dead = False
    for shop in made:
        with shop.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def catalog(app: Flask) -> list[int]:
    with app.app_context():
        category = make_category(name="Lamps")
        return [make_product(category, name=f"Lamp {n}", price="10.00").id for n in range(3)]


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Any]], int]:
    """How many times the app's Redis clients wrote to a socket (one write a round trip) during an action."""
    sends: list[int] = []
    original = AbstractConnection.send_packed_command

    def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)

    def count(action: Callable[[], Any]) -> int:
        sends.clear()
        action()
        return len(sends)

    return count


def test_a_cached_catalog_page_costs_one_round_trip_to_redis(redis_shop, private_redis, catalog, round_trips):
    client = redis_shop().test_client()
    first = client.get("/api/products/", **ANONYMOUS)  # a miss: stored for the next request
    assert first.status_code == 200

    answers: list[Any] = []
    trips = round_trips(lambda: answers.append(client.get("/api/products/", **ANONYMOUS)))
    commands = commands_sent(private_redis, lambda: answers.append(client.get("/api/products/", **ANONYMOUS)))

    assert trips == 1
    assert commands == ["EVALSHA", "EVALSHA"]  # the limit's increment and the page's lookup, in one pipeline
    for answer in answers:
        assert answer.status_code == 200
        assert answer.get_data() == first.get_data() and answer.headers["ETag"] == first.headers["ETag"]
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers] == ["98", "97"]


def test_the_same_holds_for_a_product_page_and_its_304(redis_shop, catalog, round_trips):
    client = redis_shop().test_client()
    path = f"/api/products/{catalog[0]}/"
    etag = client.get(path, **ANONYMOUS).headers["ETag"]

    answers: list[Any] = []
    trips = round_trips(lambda: answers.append(client.get(path, headers={"If-None-Match": etag}, **ANONYMOUS)))

    assert trips == 1
    assert answers[0].status_code == 304 and answers[0].headers["ETag"] == etag


def test_a_write_is_seen_by_the_next_read_ahead_page(redis_shop, catalog, app):
    shop = redis_shop()
    client = shop.test_client()
    assert client.get("/api/products/", **ANONYMOUS).status_code == 200
    assert client.get("/api/products/", **ANONYMOUS).get_json()[0]["name"] == "Lamp 0"

    with shop.app_context():
        from shop.products import services

        services.update_product(catalog[0], {"name": "Desk lamp"})  # commits, then invalidates

    assert client.get("/api/products/", **ANONYMOUS).get_json()[0]["name"] == "Desk lamp"


def test_cached_pages_still_count_against_the_limit(redis_shop, catalog):
    client = redis_shop(RATELIMIT_ANON="2/minute").test_client()

    statuses = [client.get("/api/products/", **ANONYMOUS).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_flushed_scripts_cost_one_slower_request_and_nothing_else(redis_shop, private_redis, catalog, round_trips):
    client = redis_shop().test_client()
    page = client.get("/api/products/", **ANONYMOUS).get_data()
    private_redis.client().script_flush()  # as after a Redis restart that kept its data

    reloaded = client.get("/api/products/", **ANONYMOUS)
    answers: list[Any] = []
    trips = round_trips(lambda: answers.append(client.get("/api/products/", **ANONYMOUS)))

    assert reloaded.status_code == 200 and reloaded.get_data() == page
    assert trips == 1 and answers[0].get_data() == page


def test_without_the_limiter_the_cache_reads_redis_itself(redis_shop, catalog, round_trips):
    client = redis_shop(RATELIMIT_ENABLED=False).test_client()
    page = client.get("/api/products/", **ANONYMOUS).get_data()

    answers: list[Any] = []
    trips = round_trips(lambda: answers.append(client.get("/api/products/", **ANONYMOUS)))

    assert trips == 1 and answers[0].get_data() == page


def test_a_cache_on_another_redis_is_read_apart(redis_shop, private_redis, catalog, round_trips):
    """Keys travel with the limit check only to the Redis they live in."""
    url = os.environ["REDIS_URL"]
    client = redis_shop(CACHE_REDIS_URL=url, REDIS_URL=url).test_client()
    page = client.get("/api/products/", **ANONYMOUS).get_data()

    answers: list[Any] = []
    trips = round_trips(lambda: answers.append(client.get("/api/products/", **ANONYMOUS)))

    assert trips == 2 and answers[0].get_data() == page


def test_the_api_keeps_no_cookie_sessions(app, client, catalog):
    response = client.get("/api/products/")

    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    with app.test_request_context("/api/products/"):
        assert dict(session) == {}
        with pytest.raises(RuntimeError):
            session["user"] = "alice"


def test_a_token_is_verified_once_while_it_is_valid(app, monkeypatch):
    """The limiter and the view of one request, and the requests after it, share one verification of a token;
    a forged token is refused, and an expired one is refused although it verified before."""
    decoded: list[str] = []
    original = manager._decode_jwt

    def counted(**kwargs: Any) -> dict[str, Any]:
        decoded.append(kwargs["encoded_token"])
        return original(**kwargs)

    monkeypatch.setattr(manager, "_decode_jwt", counted)
    headers_parsed: list[str] = []
    original_header = jwt_utils.get_unverified_jwt_headers

    def counted_header(encoded_token: str) -> dict[str, Any]:
        headers_parsed.append(encoded_token)
        return original_header(encoded_token)

    monkeypatch.setattr("shop.infra.jwt.get_unverified_jwt_headers", counted_header)
    limits = {"RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://", "RATELIMIT_STORAGE_OPTIONS": {}}
    shop = create_app(app_config(**limits))
    try:
        with shop.app_context():
            user = make_user(username="dora", password=PASSWORD)
            short = create_access_token(identity=user.id, expires_delta=timedelta(seconds=3))
        client = shop.test_client()
        token = client.post("/api/token/", json={"username": "dora", "password": PASSWORD}).get_json()["access"]
        decoded.clear()

        first = client.get("/api/users/me/", headers=bearer(token))
        second = client.get("/api/users/me/", headers=bearer(token))
        forged = client.get("/api/users/me/", headers=bearer(token[:-2] + "xx"))
        assert first.status_code == second.status_code == 200 and second.get_json()["username"] == "dora"
        assert decoded.count(token) == 1
        assert headers_parsed.count(token) == 1  # its header parsed once too
        assert forged.status_code == 401

        assert client.get("/api/users/me/", headers=bearer(short)).status_code == 200
        time.sleep(4)  # past the short token's expiry: waiting for a state, not timing anything
        expired = client.get("/api/users/me/", headers=bearer(short))
        assert expired.status_code == 401 and "expired" in expired.get_json()["message"]
    finally:
        limiter.init_app(app)
        with shop.app_context():
            db.session.remove()
            db.engine.dispose()


def _wait_for_ended_sessions_marker(server: Any) -> None:
    deadline = time.monotonic() + 10
    while not any(key.endswith(b"sessions-ended:ready") for db in range(16) for key in server.client(db).scan_iter()):
        assert time.monotonic() < deadline, "the session cache was not refilled"
        time.sleep(0.02)


def test_a_signed_in_request_asks_its_limit_and_its_revocation_in_one_round_trip(
    redis_shop, private_redis, catalog, round_trips
):
    """Before the view: the budget's increment and the token's revocation in one pipeline; a revoked token
    is still refused on the next request, and an order then costs one more round trip (its stock)."""
    shop = redis_shop()
    client = shop.test_client()
    with shop.app_context():
        make_user(username="erin", password=PASSWORD)
    pair = client.post("/api/token/", json={"username": "erin", "password": PASSWORD}).get_json()
    headers = bearer(pair["access"])
    assert client.get("/api/users/me/", headers=headers).status_code == 200  # starts the session cache's refill
    _wait_for_ended_sessions_marker(private_redis)  # set by a background thread, not by the request

    answers: list[Any] = []
    trips = round_trips(lambda: answers.append(client.get("/api/users/me/", headers=headers)))
    commands = commands_sent(private_redis, lambda: answers.append(client.get("/api/users/me/", headers=headers)))
    order = {"items": [{"product_id": catalog[0], "quantity": 1}]}
    assert client.post("/api/orders/", json=order, headers=headers).status_code == 201  # loads the stock script
    order_trips = round_trips(lambda: answers.append(client.post("/api/orders/", json=order, headers=headers)))

    assert [answer.status_code for answer in answers] == [200, 200, 201]
    assert trips == 1
    assert commands == ["EVALSHA", "MGET"]  # the limit's increment and the revocation, in one pipeline
    assert order_trips == 2  # the same pipeline, then the order's stock laid over the catalog after the commit

    assert client.post("/api/token/revoke/", json={"refresh": pair["refresh"]}, headers=headers).status_code == 204
    refused = client.get("/api/users/me/", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.get_json()["message"]
