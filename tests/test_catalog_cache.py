"""The catalog's response cache: never stale after a write, 304 on a known ETag, no SQL on a hit, Redis outages."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
import redis
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import update

from shop import create_app
from shop.extensions import db
from shop.products.cache import catalog_changed
from shop.products.models import Category, Product
from tests.conftest import PASSWORD, app_config, bearer, need_service
from tests.factories import make_category, make_product, make_user
from tests.querycount import count_statements


def cache_app(redis_url: str | None = None, **overrides: Any) -> Flask:
    """An app on the test database with its own cache: in-process, or Redis under a prefix of its own."""
    if redis_url:
        cache = {
            "REDIS_URL": redis_url,
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex}:",
            "CACHE_OPTIONS": {"socket_timeout": 0.25, "socket_connect_timeout": 0.25},
        }
    else:
        cache = {"REDIS_URL": None, "CACHE_TYPE": "SimpleCache", "CACHE_REDIS_URL": None, "CACHE_OPTIONS": {}}
    return create_app(app_config(**cache, **overrides))


@contextmanager
def running(app: Flask) -> Iterator[Flask]:
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
            from shop.extensions import cache

            with suppress(redis.RedisError):
                cache.clear()


@pytest.fixture(params=["in-process", "redis"])
def cached(request, app) -> Iterator[Flask]:
    """The same checks on both cache backends."""
    if request.param == "redis":
        url = need_service("REDIS_URL", os.environ.get("REDIS_URL"))
        with running(cache_app(url)) as cached_app:
            yield cached_app
    else:
        with running(cache_app(None)) as cached_app:
            yield cached_app


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


KINDS = ("list", "detail", "categories", "category")


def hits(*kinds: str) -> float:
    return sum(metric("shop_cache_requests_total", kind=kind, result="hit") for kind in kinds or KINDS)


def misses(*kinds: str) -> float:
    return sum(metric("shop_cache_requests_total", kind=kind, result="miss") for kind in kinds or KINDS)


def cache_errors() -> float:
    return metric("shop_cache_errors_total")


def arrange(app: Flask, **product: Any) -> tuple[int, int, dict[str, str]]:
    """A category, a product in it, and a staff token."""
    with app.app_context():
        category = make_category(name="Accessories")
        item = make_product(category, name="Wireless Mouse", price="25.99", stock=10, **product)
        make_user(username="boss", email="boss@example.com", password=PASSWORD, is_staff=True)
        ids = category.id, item.id
    token = app.test_client().post("/api/token/", json={"username": "boss", "password": PASSWORD}).get_json()
    return *ids, bearer(token["access"])


def change_behind_the_apps_back(app: Flask, product_id: int, **values: Any) -> None:
    """Write straight to the database, as no route would: a cached page does not see it."""
    with app.app_context():
        db.session.execute(update(Product).where(Product.id == product_id).values(**values))
        db.session.commit()


# Freshness


def test_a_hit_serves_stored_bytes_and_a_staff_write_is_visible_on_the_next_get(cached):
    client = cached.test_client()
    _, product_id, staff = arrange(cached)
    detail = f"/api/products/{product_id}/"
    assert client.get("/api/products/").get_json()[0]["price"] == "25.99"
    assert client.get(detail).get_json()["price"] == "25.99"

    change_behind_the_apps_back(cached, product_id, price="1.00")
    before = hits()
    assert client.get("/api/products/").get_json()[0]["price"] == "25.99"  # served from the cache
    assert client.get(detail).get_json()["price"] == "25.99"
    assert hits() == before + 2

    assert client.patch(detail, json={"price": "19.99"}, headers=staff).status_code == 200
    assert client.get("/api/products/").get_json()[0]["price"] == "19.99"
    assert client.get(detail).get_json()["price"] == "19.99"


@pytest.mark.parametrize(
    ("method", "path", "body", "check"),
    [
        ("post", "/api/products/{p}/stock/", {"delta": -4}, lambda page, detail: page[0]["stock"] == 6),
        ("put", "/api/products/{p}/", None, lambda page, detail: page[0]["name"] == "Renamed"),
        ("delete", "/api/products/{p}/", None, lambda page, detail: page == [] and detail is None),
        (
            "patch",
            "/api/categories/{c}/",
            {"name": "Gadgets"},
            lambda page, detail: detail["category"]["name"] == "Gadgets",
        ),
        ("post", "/api/products/", "new", lambda page, detail: len(page) == 2),
    ],
)
def test_every_catalog_write_invalidates(cached, method, path, body, check):
    client = cached.test_client()
    category_id, product_id, staff = arrange(cached)
    if body is None and method == "put":
        body = {"name": "Renamed", "description": "", "price": "1.00", "stock": 10, "image": None}
        body["category_id"] = category_id
    if body == "new":
        body = {"name": "Keyboard", "price": "75.50", "category_id": category_id}
    detail_url = f"/api/products/{product_id}/"
    client.get("/api/products/"), client.get(detail_url)

    response = getattr(client, method)(path.format(p=product_id, c=category_id), json=body, headers=staff)

    assert response.status_code in {200, 201, 204}, response.get_json()
    detail = client.get(detail_url)
    assert check(client.get("/api/products/").get_json(), detail.get_json() if detail.status_code == 200 else None)


def test_category_reads_are_cached_and_invalidated(cached):
    client = cached.test_client()
    category_id, _, staff = arrange(cached)
    client.get("/api/categories/"), client.get(f"/api/categories/{category_id}/")

    with cached.app_context():
        db.session.execute(update(Category).values(description="changed directly"))
        db.session.commit()
    assert client.get("/api/categories/").get_json()[0]["description"] == ""

    client.post("/api/categories/", json={"name": "Office"}, headers=staff)
    assert client.get("/api/categories/").get_json()[0]["description"] == "changed directly"
    assert client.get(f"/api/categories/{category_id}/").get_json()["description"] == "changed directly"
    assert client.delete(f"/api/categories/{category_id + 1}/", headers=staff).status_code == 204
    assert len(client.get("/api/categories/").get_json()) == 1


def test_an_order_invalidates_the_stock_it_took(cached):
    client = cached.test_client()
    _, product_id, _ = arrange(cached)
    with cached.app_context():
        make_user(username="alice", email="alice@example.com", password=PASSWORD)
    token = client.post("/api/token/", json={"username": "alice", "password": PASSWORD}).get_json()["access"]
    assert client.get(f"/api/products/{product_id}/").get_json()["stock"] == 10

    order = client.post(
        "/api/orders/", json={"items": [{"product_id": product_id, "quantity": 3}]}, headers=bearer(token)
    )

    assert order.status_code == 201, order.get_json()
    assert client.get(f"/api/products/{product_id}/").get_json()["stock"] == 7
    assert client.get("/api/products/").get_json()[0]["stock"] == 7


# ETag and 304


def test_if_none_match_with_the_current_etag_is_304(cached):
    client = cached.test_client()
    _, product_id, staff = arrange(cached)
    for url in ("/api/products/", f"/api/products/{product_id}/", "/api/categories/"):
        first = client.get(url)
        etag = first.headers["ETag"]

        cached_copy = client.get(url, headers={"If-None-Match": etag})
        assert cached_copy.status_code == 304 and cached_copy.data == b"" and cached_copy.headers["ETag"] == etag
        assert client.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200

    invalidate_in(cached)
    # Recomputed after an invalidation, the same content has the same tag: still 304, on the miss too.
    assert client.get("/api/products/", headers={"If-None-Match": etag_of(client, "/api/products/")}).status_code == 304

    old = etag_of(client, "/api/products/")
    client.patch(f"/api/products/{product_id}/", json={"stock": 99}, headers=staff)
    fresh = client.get("/api/products/", headers={"If-None-Match": old})
    assert fresh.status_code == 200 and fresh.headers["ETag"] != old


def test_pages_with_other_metadata_have_other_etags(cached):
    client = cached.test_client()
    arrange(cached)

    assert etag_of(client, "/api/products/?page=1") != etag_of(client, "/api/products/?page=2")


def etag_of(client, url: str) -> str:
    return client.get(url).headers["ETag"]


def invalidate_in(app: Flask) -> None:
    with app.app_context():
        catalog_changed()


# Keys


def test_the_key_is_the_selecting_parameters_only_and_cannot_be_forged(cached):
    client = cached.test_client()
    arrange(cached)
    with cached.app_context():
        make_product(db.session.get(Category, 1) or make_category(), name="Speaker", stock=0)

    assert len(client.get("/api/products/?search=e").get_json()) == 2
    before = hits()
    assert len(client.get("/api/products/?search=e&utm_source=mail").get_json()) == 2
    assert hits() == before + 1
    # A search text that looks like more parameters is still one search text.
    assert client.get("/api/products/?search=e&in_stock=true").get_json()[0]["name"] == "Wireless Mouse"
    assert client.get("/api/products/?search=e%26in_stock%3Dtrue").get_json() == []


def test_a_long_search_is_cached_under_a_hashed_key(cached):
    client = cached.test_client()
    _, product_id, _ = arrange(cached)
    url = "/api/products/?search=" + "mouse " * 16
    client.get(url)
    change_behind_the_apps_back(cached, product_id, name="Wireless mouse " + "mouse " * 16)

    before = hits()
    assert client.get(url).get_json() == []  # the stored answer, from before the name matched
    assert hits() == before + 1


def test_an_entry_that_cannot_be_read_is_a_miss(cached):
    from shop.extensions import cache

    client = cached.test_client()
    arrange(cached)
    with cached.app_context():
        cache.set("catalog:products", b"not an entry")

    assert client.get("/api/products/").get_json()[0]["name"] == "Wireless Mouse"


def test_cache_off_always_reads_the_database(app):
    with running(cache_app(None, CATALOG_CACHE=False)) as off:
        _, product_id, _ = arrange(off)
        client = off.test_client()
        client.get("/api/products/")
        change_behind_the_apps_back(off, product_id, stock=1)

        assert client.get("/api/products/").get_json()[0]["stock"] == 1
        assert "ETag" in client.get("/api/products/").headers


def test_in_process_cache_is_off_under_gunicorn(app, monkeypatch):
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/23.0.0")
    with running(cache_app(None)) as served:
        _, product_id, _ = arrange(served)
        client = served.test_client()
        client.get("/api/products/")
        change_behind_the_apps_back(served, product_id, stock=1)

        assert client.get("/api/products/").get_json()[0]["stock"] == 1


# Statements


def test_a_list_page_costs_the_same_statements_for_1_or_100_products(app, client):
    with app.app_context():
        category = make_category()
        make_product(category)
    with count_statements(app) as one:
        assert len(client.get("/api/products/?page_size=100").get_json()) == 1

    with app.app_context():
        category = db.session.merge(category)
        for _ in range(99):
            make_product(category)
        catalog_changed()
    with count_statements(app) as hundred:
        assert len(client.get("/api/products/?page_size=100").get_json()) == 100

    assert len(one) == len(hundred) == 1  # the page, its category joined and its total alongside
    with count_statements(app) as detail:
        client.get("/api/products/1/")
    assert len(detail) == 1


def test_a_cached_get_runs_no_sql(app, client):
    with app.app_context():
        make_product()
    client.get("/api/products/")

    with count_statements(app) as statements:
        assert client.get("/api/products/").status_code == 200

    assert statements == []


# Redis outages


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OwnRedis:
    """A redis-server of this test's own on a free loopback port, so stopping it disturbs no one."""

    def __init__(self) -> None:
        self.binary = need_service("redis-server", shutil.which("redis-server"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def command(self, *args: str) -> Any:
        return redis.Redis(port=self.port, socket_timeout=2).execute_command(*args)


@pytest.fixture
def own_redis(app) -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_stopped_mid_run_does_not_break_reads_or_writes(own_redis):
    with running(cache_app(own_redis.url, CATALOG_CACHE_RETRY_SECONDS=0)) as served:
        client = served.test_client()
        _, product_id, staff = arrange(served)
        detail = f"/api/products/{product_id}/"
        client.get("/api/products/"), client.get(detail)
        before = hits()
        assert client.get("/api/products/").status_code == 200 and hits() == before + 1

        own_redis.stop()
        errors = cache_errors()
        assert client.get("/api/products/").get_json()[0]["stock"] == 10
        assert client.patch(detail, json={"stock": 4}, headers=staff).status_code == 200
        assert client.get("/api/products/").get_json()[0]["stock"] == 4
        assert client.get(detail).get_json()["stock"] == 4
        assert cache_errors() > errors

        own_redis.start()
        assert client.get("/api/products/").get_json()[0]["stock"] == 4
        before = hits()
        assert client.get("/api/products/").get_json()[0]["stock"] == 4
        assert hits() == before + 1  # caching again


def test_an_invalidation_redis_refused_is_paid_before_the_next_cached_read(own_redis):
    with running(cache_app(own_redis.url, CATALOG_CACHE_RETRY_SECONDS=0)) as served:
        client = served.test_client()
        _, product_id, staff = arrange(served)
        assert client.get("/api/products/").get_json()[0]["stock"] == 10

        # A replica of a master that is not there: keeps its data and answers reads, refuses writes.
        own_redis.command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            assert client.patch(f"/api/products/{product_id}/", json={"stock": 4}, headers=staff).status_code == 200
        finally:
            own_redis.command("REPLICAOF", "NO", "ONE")

        assert client.get("/api/products/").get_json()[0]["stock"] == 4


def test_a_redis_that_never_answers_does_not_hang_reads(app):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing ever replies
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with running(cache_app(url)) as served:
            client = served.test_client()
            _, product_id, staff = arrange(served)
            errors = cache_errors()

            assert client.get("/api/products/").status_code == 200
            assert client.get(f"/api/products/{product_id}/").status_code == 200
            assert client.patch(f"/api/products/{product_id}/", json={"stock": 4}, headers=staff).status_code == 200
            assert client.get("/api/products/").get_json()[0]["stock"] == 4
            assert cache_errors() > errors


# The seed command


def test_seed_fills_the_catalog_and_respects_if_empty(app, runner, client):
    client.get("/api/products/")

    result = runner.invoke(args=["seed", "--categories", "3", "--products", "250"])

    assert result.exit_code == 0, result.output
    assert json_total(client.get("/api/products/")) == 250  # the seed invalidated the cached page
    assert len(client.get("/api/categories/").get_json()) == 3
    again = runner.invoke(args=["seed", "--categories", "3", "--products", "250", "--if-empty"])
    assert again.exit_code == 0 and "nothing seeded" in again.output
    more = runner.invoke(args=["seed", "--categories", "2", "--products", "5"])
    assert more.exit_code == 0, more.output
    assert json_total(client.get("/api/products/")) == 255
    assert len(client.get("/api/categories/").get_json()) == 5


def json_total(response) -> int:
    return json.loads(response.headers["X-Pagination"])["total"]


def test_seeded_products_are_valid_products(app, runner, client):
    runner.invoke(args=["seed", "--categories", "2", "--products", "30"])

    for product in client.get("/api/products/?page_size=100").get_json():
        assert float(product["price"]) >= 0 and product["stock"] >= 0 and product["category"]["name"]
