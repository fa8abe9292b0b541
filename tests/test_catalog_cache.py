"""The catalog's response cache: never stale after a write, 304 on a known ETag, no SQL on a hit, Redis outages."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
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


# Per-product versions: orders change a few products' stock; every page that shows them, or whose
# membership they change, is fresh on the next GET; every other page stays cached.


def shelf(app: Flask) -> dict[str, Any]:
    """Two categories, a product with one unit left, others in stock, a customer's and a staff member's tokens."""
    with app.app_context():
        lamps, desks = make_category(name="Lamps"), make_category(name="Desks")
        last = make_product(lamps, name="Last lamp", price="30.00", stock=1)
        lamp = make_product(lamps, name="Desk lamp", price="20.00", stock=10)
        desk = make_product(desks, name="Oak desk", price="300.00", stock=5)
        make_user(username="alice", email="alice@example.com", password=PASSWORD)
        make_user(username="boss", email="boss@example.com", password=PASSWORD, is_staff=True)
        ids = {"lamps": lamps.id, "desks": desks.id, "last": last.id, "lamp": lamp.id, "desk": desk.id}
    client = app.test_client()
    for name in ("alice", "boss"):
        token = client.post("/api/token/", json={"username": name, "password": PASSWORD}).get_json()["access"]
        ids[name] = bearer(token)
    return ids


def names(client: Any, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, response.get_json()
    return [product["name"] for product in response.get_json()]


def order(client: Any, buyer: dict[str, str], product_id: int, quantity: int = 1) -> None:
    placed = client.post(
        "/api/orders/", json={"items": [{"product_id": product_id, "quantity": quantity}]}, headers=buyer
    )
    assert placed.status_code == 201, placed.get_json()


FILTERED_PAGES = (
    "/api/products/",
    "/api/products/?in_stock=true",
    "/api/products/?in_stock=false",
    "/api/products/?category={lamps}",
    "/api/products/?category={lamps}&in_stock=true",
    "/api/products/?min_price=25.00",
    "/api/products/?ordering=-price",
    "/api/products/?in_stock=true&ordering=-price&page_size=2",
)


def test_an_order_that_sells_out_a_product_is_seen_on_every_page_filters_included(cached):
    client = cached.test_client()
    ids = shelf(cached)
    pages = [url.format(**ids) for url in FILTERED_PAGES]
    for url in pages:
        client.get(url)
    client.get(f"/api/products/{ids['last']}/")
    assert "Last lamp" in names(client, "/api/products/?in_stock=true")
    assert "Last lamp" not in names(client, "/api/products/?in_stock=false")

    order(client, ids["alice"], ids["last"])

    assert "Last lamp" not in names(client, "/api/products/?in_stock=true")
    assert names(client, "/api/products/?in_stock=false") == ["Last lamp"]
    assert "Last lamp" not in names(client, f"/api/products/?category={ids['lamps']}&in_stock=true")
    assert names(client, "/api/products/?in_stock=true&ordering=-price&page_size=2") == ["Oak desk", "Desk lamp"]
    in_stock = client.get("/api/products/?in_stock=true")
    assert json.loads(in_stock.headers["X-Pagination"])["total"] == 2
    for url in ("/api/products/", f"/api/products/?category={ids['lamps']}", "/api/products/?min_price=25.00"):
        shown = {product["name"]: product["stock"] for product in client.get(url).get_json()}
        assert shown["Last lamp"] == 0, url
    assert client.get(f"/api/products/{ids['last']}/").get_json()["stock"] == 0


def test_a_restock_brings_a_sold_out_product_back_to_in_stock_pages(cached):
    client = cached.test_client()
    ids = shelf(cached)
    order(client, ids["alice"], ids["last"])
    assert "Last lamp" not in names(client, "/api/products/?in_stock=true")
    assert names(client, "/api/products/?in_stock=false") == ["Last lamp"]

    restocked = client.post(f"/api/products/{ids['last']}/stock/", json={"delta": 3}, headers=ids["boss"])

    assert restocked.status_code == 200 and restocked.get_json()["stock"] == 3
    assert "Last lamp" in names(client, "/api/products/?in_stock=true")
    assert names(client, "/api/products/?in_stock=false") == []
    assert client.get(f"/api/products/{ids['last']}/").get_json()["stock"] == 3


def test_a_stock_adjustment_is_seen_on_list_and_detail_pages(cached):
    client = cached.test_client()
    ids = shelf(cached)
    detail = f"/api/products/{ids['lamp']}/"
    for url in ("/api/products/", f"/api/products/?category={ids['lamps']}", detail):
        client.get(url)

    assert client.post(f"{detail}stock/", json={"delta": -4}, headers=ids["boss"]).status_code == 200

    assert client.get(detail).get_json()["stock"] == 6
    for url in ("/api/products/", f"/api/products/?category={ids['lamps']}"):
        shown = {product["name"]: product["stock"] for product in client.get(url).get_json()}
        assert shown["Desk lamp"] == 6, url


def test_a_staff_edit_is_seen_on_filtered_and_ordered_pages(cached):
    client = cached.test_client()
    ids = shelf(cached)
    for url in ("/api/products/?min_price=25.00", "/api/products/?ordering=price", f"/api/products/{ids['lamp']}/"):
        client.get(url)

    changed = client.patch(f"/api/products/{ids['lamp']}/", json={"price": "50.00"}, headers=ids["boss"])

    assert changed.status_code == 200
    assert names(client, "/api/products/?min_price=25.00") == ["Last lamp", "Desk lamp", "Oak desk"]
    assert names(client, "/api/products/?ordering=price") == ["Last lamp", "Desk lamp", "Oak desk"]
    assert client.get(f"/api/products/{ids['lamp']}/").get_json()["price"] == "50.00"


def test_an_order_leaves_every_page_cached_and_its_pages_show_the_new_stock(cached):
    client = cached.test_client()
    ids = shelf(cached)
    untouched = [
        f"/api/products/?category={ids['desks']}",
        f"/api/products/?category={ids['desks']}&in_stock=true",
        "/api/products/?min_price=250.00",
        f"/api/products/{ids['desk']}/",
        "/api/categories/",
        f"/api/categories/{ids['lamps']}/",
    ]
    touched = ["/api/products/", f"/api/products/{ids['lamp']}/"]
    for url in untouched + touched:
        client.get(url)

    order(client, ids["alice"], ids["lamp"], 2)  # 10 → 8: no page's membership changes

    before = hits(), misses()
    for url in untouched:
        assert client.get(url).status_code == 200
    assert client.get(touched[0]).get_json()[1]["stock"] == 8
    assert client.get(touched[1]).get_json()["stock"] == 8
    assert (hits(), misses()) == (before[0] + len(untouched) + len(touched), before[1])


def test_a_sell_out_makes_only_pages_filtered_by_stock_miss(cached):
    client = cached.test_client()
    ids = shelf(cached)
    stock_filtered = f"/api/products/?category={ids['desks']}&in_stock=true"
    unfiltered = f"/api/products/?category={ids['desks']}"
    showing_it = f"/api/products/?category={ids['lamps']}"
    for url in (stock_filtered, unfiltered, showing_it, f"/api/products/{ids['last']}/"):
        client.get(url)

    order(client, ids["alice"], ids["last"])  # 1 → 0: the in-stock set changed

    before = misses("list"), misses("detail")
    assert names(client, unfiltered) == ["Oak desk"]
    shown = {product["name"]: product["stock"] for product in client.get(showing_it).get_json()}
    assert shown == {"Last lamp": 0, "Desk lamp": 10}
    assert client.get(f"/api/products/{ids['last']}/").get_json()["stock"] == 0
    assert (misses("list"), misses("detail")) == before
    before = misses("list")
    assert names(client, stock_filtered) == ["Oak desk"]
    assert misses("list") == before + 1  # it cannot know whether the product was among its matches


def template_of(body: bytes, *stocks: int) -> bytes:
    """A page's bytes as the cache stores them: each of these stocks (in order) a placeholder."""
    from shop.products.cache import PLACEHOLDER

    for stock in stocks:
        body = body.replace(b'"stock":%d' % stock, PLACEHOLDER, 1)
    return body


def stock_version_of(app: Flask, product_id: int) -> int:
    with app.app_context():
        return db.session.get(Product, product_id).stock_version


def test_a_reader_racing_a_write_never_overwrites_the_newer_stock(cached):
    """Deterministic: the reader reads the database, a write commits and sets its stock, then the reader stores."""
    from shop.products.cache import Entry, _key, catalog, etag_of, stock_changed

    client = cached.test_client()
    ids = shelf(cached)
    url = f"/api/products/?category={ids['desks']}"
    old_page = client.get(url)
    with cached.test_request_context(url):
        from flask import request as reader_request

        key = _key("products", {}, list(reader_request.args))
        store = catalog()
        served, state = store.lookup(key)  # what a reader does first: a miss would record this state
        assert state is not None or served is not None
        if state is None:  # the page was cached: look up a key of our own under the same state
            key += "&racing"
            served, state = store.lookup(key)
        template = template_of(old_page.get_data(), 5)
        pagination = old_page.headers["X-Pagination"]
        read_version = stock_version_of(cached, ids["desk"])  # the reader's database read: 5 units

        with cached.app_context():  # the writer, between the reader's database read and its store
            db.session.execute(
                update(Product)
                .where(Product.id == ids["desk"])
                .values(stock=4, stock_version=Product.stock_version + 1)
            )
            db.session.commit()
            stock_changed([(ids["desk"], 4, read_version + 1, False)])

        entry = Entry(state, False, [ids["desk"]], etag_of(pagination, template), pagination, "", template)
        store.store(key, entry, [(ids["desk"], 5, read_version, False)])  # older version: refused
        again, _ = store.lookup(key)

    assert again is not None and again.status_code == 200  # the page is served, with the newer stock
    assert json.loads(again.get_data())[0]["stock"] == 4
    assert client.get(url).get_json()[0]["stock"] == 4


def test_a_global_write_racing_a_reader_is_not_served_stale_either(cached):
    from shop.products.cache import Entry, catalog, catalog_changed, etag_of, etag_with_stocks

    client = cached.test_client()
    ids = shelf(cached)
    url = f"/api/products/{ids['desk']}/"
    old = client.get(url)
    with cached.test_request_context(url):
        store = catalog()
        _, state = store.lookup("catalog:product:racing")
        assert state is not None
        with cached.app_context():
            db.session.execute(update(Product).where(Product.id == ids["desk"]).values(name="Walnut desk"))
            db.session.commit()
            catalog_changed()
        template = template_of(old.get_data(), 5)
        entry = Entry(state, False, [ids["desk"]], etag_of("", template), "", "", template)
        store.store("catalog:product:racing", entry, [])
        again, _ = store.lookup("catalog:product:racing")

    assert again is None and old.headers["ETag"] == etag_with_stocks(etag_of("", template), [b"5"])
    assert client.get(url).get_json()["name"] == "Walnut desk"


def redis_of(app: Flask) -> redis.Redis:
    return redis.Redis.from_url(app.config["CACHE_REDIS_URL"])


def test_entries_outliving_their_state_are_never_served(app):
    """The state hash deleted or evicted (or Redis restarted with entries restored) while entries survive."""
    url = need_service("REDIS_URL", os.environ.get("REDIS_URL"))
    with running(cache_app(url)) as served:
        client = served.test_client()
        _, product_id, _ = arrange(served)
        assert client.get("/api/products/").get_json()[0]["name"] == "Wireless Mouse"
        assert client.get(f"/api/products/{product_id}/").get_json()["name"] == "Wireless Mouse"
        change_behind_the_apps_back(served, product_id, name="Trackball")
        before = hits()
        assert client.get("/api/products/").get_json()[0]["name"] == "Wireless Mouse"  # still cached, as designed
        assert hits() == before + 1

        prefix = served.config["CACHE_KEY_PREFIX"]
        store = redis_of(served)
        assert store.delete(prefix + "catalog:state") == 1
        assert store.exists(prefix + "catalog:products")  # the entries survive

        assert client.get("/api/products/").get_json()[0]["name"] == "Trackball"
        assert client.get(f"/api/products/{product_id}/").get_json()["name"] == "Trackball"
        before = hits()
        assert client.get("/api/products/").get_json()[0]["name"] == "Trackball"
        assert hits() == before + 1  # cached again, under the new epoch


def forget_stocks(app: Flask) -> None:
    """The stock hash lost (evicted, deleted, Redis restarted without it) while entries survive."""
    from shop.products.cache import LocalCatalog, catalog

    with app.app_context():
        store = catalog()
        if isinstance(store, LocalCatalog):
            store.stocks.clear()
        else:
            assert redis_of(app).delete(app.config["CACHE_KEY_PREFIX"] + "catalog:stock") == 1


def test_stocks_lost_from_the_cache_are_read_from_the_database_and_pages_stay_hits(cached):
    client = cached.test_client()
    ids = shelf(cached)
    pages = ["/api/products/", f"/api/products/?category={ids['lamps']}", f"/api/products/{ids['lamp']}/"]
    for url in pages:
        client.get(url)
    order(client, ids["alice"], ids["lamp"], 3)  # 10 → 7
    forget_stocks(cached)

    before = hits()
    with count_statements(cached) as statements:
        first = {product["name"]: product["stock"] for product in client.get(pages[0]).get_json()}
    assert first == {"Last lamp": 1, "Desk lamp": 7, "Oak desk": 5}
    assert len(statements) == 1  # just the missing stocks, in one statement
    with count_statements(cached) as statements:
        assert client.get(pages[1]).get_json()[1]["stock"] == 7
        assert client.get(pages[2]).get_json()["stock"] == 7
    assert statements == []  # the first read set them again
    assert hits() == before + 3

    order(client, ids["alice"], ids["lamp"], 2)  # 7 → 5, set over the refilled stock
    assert client.get(pages[2]).get_json()["stock"] == 5
    assert client.get(pages[0]).get_json()[1]["stock"] == 5


def test_a_redis_restarted_empty_serves_fresh_pages_and_caches_again(private_redis, app):
    with running(cache_app(private_redis.url(), CATALOG_CACHE_RETRY_SECONDS=0)) as served:
        client = served.test_client()
        _, product_id, staff = arrange(served)
        assert client.get("/api/products/").get_json()[0]["stock"] == 10

        private_redis.stop()
        private_redis.start()  # empty: no state, no entries, no scripts
        assert client.patch(f"/api/products/{product_id}/", json={"stock": 7}, headers=staff).status_code == 200

        assert client.get("/api/products/").get_json()[0]["stock"] == 7
        before = hits()
        assert client.get("/api/products/").get_json()[0]["stock"] == 7
        assert hits() == before + 1


def test_stock_changes_owed_while_redis_was_away_are_paid_before_the_next_read(own_redis):
    from shop.products.cache import stock_changed

    with running(cache_app(own_redis.url, CATALOG_CACHE_RETRY_SECONDS=0)) as served:
        client = served.test_client()
        _, product_id, _ = arrange(served)
        assert client.get("/api/products/").get_json()[0]["stock"] == 10

        own_redis.command("REPLICAOF", "127.0.0.1", str(free_port()))  # refuses writes, keeps data
        try:
            change_behind_the_apps_back(served, product_id, stock=2, stock_version=Product.stock_version + 1)
            with served.app_context():
                stock_changed([(product_id, 2, 1, False)])  # could not reach Redis: owed
        finally:
            own_redis.command("REPLICAOF", "NO", "ONE")

        assert client.get("/api/products/").get_json()[0]["stock"] == 2


def test_the_relay_touching_products_again_makes_their_pages_fresh(cached):
    from shop.products.cache import products_touched

    client = cached.test_client()
    ids = shelf(cached)
    client.get("/api/products/?in_stock=true")
    client.get(f"/api/products/{ids['last']}/")
    # A process committed an order, then died before telling the cache.
    change_behind_the_apps_back(cached, ids["last"], stock=0, stock_version=Product.stock_version + 1)
    assert "Last lamp" in names(client, "/api/products/?in_stock=true")
    assert client.get(f"/api/products/{ids['last']}/").get_json()["stock"] == 1  # stale until told

    with cached.app_context():
        products_touched([ids["last"]])

    assert "Last lamp" not in names(client, "/api/products/?in_stock=true")
    assert client.get(f"/api/products/{ids['last']}/").get_json()["stock"] == 0


def test_hits_and_misses_are_counted_by_kind(cached):
    client = cached.test_client()
    ids = shelf(cached)
    urls = {
        "list": "/api/products/",
        "detail": f"/api/products/{ids['lamp']}/",
        "categories": "/api/categories/",
        "category": f"/api/categories/{ids['lamps']}/",
    }
    for kind, url in urls.items():
        before = hits(kind), misses(kind)
        client.get(url)
        client.get(url)
        assert (hits(kind), misses(kind)) == (before[0] + 1, before[1] + 1), kind


# Stocks laid over the stored pages: an order makes no page miss, and every page shows its stock.


def test_after_an_order_the_list_and_detail_pages_show_the_new_stock_from_the_cache(cached):
    client = cached.test_client()
    ids = shelf(cached)
    pages = ["/api/products/", "/api/products/?in_stock=true", f"/api/products/{ids['lamp']}/"]
    for url in pages:
        client.get(url)

    order(client, ids["alice"], ids["lamp"], 4)  # 10 → 6

    before = hits("list", "detail"), misses("list", "detail")
    with count_statements(cached) as statements:
        assert client.get(pages[0]).get_json()[1] == client.get(pages[2]).get_json()
        assert client.get(pages[1]).get_json()[1]["stock"] == 6
        assert client.get(pages[2]).get_json()["stock"] == 6
    assert statements == []
    assert (hits("list", "detail"), misses("list", "detail")) == (before[0] + 4, before[1])


def test_a_cancel_gives_the_stock_back_on_cached_pages(cached):
    client = cached.test_client()
    ids = shelf(cached)
    placed = client.post(
        "/api/orders/", json={"items": [{"product_id": ids["last"], "quantity": 1}]}, headers=ids["alice"]
    )
    assert placed.status_code == 201
    assert "Last lamp" not in names(client, "/api/products/?in_stock=true")
    client.get(f"/api/products/{ids['last']}/")
    version = stock_version_of(cached, ids["last"])

    cancelled = client.post(f"/api/orders/{placed.get_json()['id']}/cancel/", headers=ids["alice"])

    assert cancelled.status_code == 200, cancelled.get_json()
    assert stock_version_of(cached, ids["last"]) == version + 1
    before = hits("detail")
    assert client.get(f"/api/products/{ids['last']}/").get_json()["stock"] == 1
    assert hits("detail") == before + 1
    assert "Last lamp" in names(client, "/api/products/?in_stock=true")  # back across zero
    assert names(client, "/api/products/?in_stock=false") == []


def test_every_stock_write_increments_the_stock_version(cached):
    client = cached.test_client()
    ids = shelf(cached)
    detail = f"/api/products/{ids['lamp']}/"
    assert stock_version_of(cached, ids["lamp"]) == 0
    order(client, ids["alice"], ids["lamp"])
    assert stock_version_of(cached, ids["lamp"]) == 1
    assert client.post(f"{detail}stock/", json={"delta": 5}, headers=ids["boss"]).status_code == 200
    assert stock_version_of(cached, ids["lamp"]) == 2
    assert client.patch(detail, json={"stock": 3}, headers=ids["boss"]).status_code == 200
    assert stock_version_of(cached, ids["lamp"]) == 3
    assert client.patch(detail, json={"price": "21.00"}, headers=ids["boss"]).status_code == 200
    assert stock_version_of(cached, ids["lamp"]) == 3  # no stock change
    shown = client.get(detail).get_json()
    assert shown["stock"] == 3 and shown["price"] == "21.00" and "stock_version" not in shown
    assert "stock_version" not in client.get("/api/products/").get_json()[0]


def test_a_stale_stock_write_is_refused(cached):
    from shop.products.cache import stock_changed

    client = cached.test_client()
    ids = shelf(cached)
    order(client, ids["alice"], ids["lamp"], 2)  # version 1: 8 units
    order(client, ids["alice"], ids["lamp"], 3)  # version 2: 5 units
    detail = f"/api/products/{ids['lamp']}/"
    assert client.get(detail).get_json()["stock"] == 5

    with cached.app_context():
        stock_changed([(ids["lamp"], 8, 1, False)])  # the first order's update, arriving late
        stock_changed([(ids["lamp"], 5, 2, False)])  # the same version again: nothing to change

    before = hits("detail")
    assert client.get(detail).get_json()["stock"] == 5
    assert client.get("/api/products/").get_json()[1]["stock"] == 5
    assert hits("detail") == before + 1


def test_the_etag_follows_the_stock_and_an_old_one_gets_the_new_page(cached):
    client = cached.test_client()
    ids = shelf(cached)
    for url in ("/api/products/", f"/api/products/{ids['lamp']}/"):
        old = client.get(url)
        old_etag = old.headers["ETag"]
        assert client.get(url, headers={"If-None-Match": old_etag}).status_code == 304

        order(client, ids["alice"], ids["lamp"])

        before = hits()
        fresh = client.get(url, headers={"If-None-Match": old_etag})
        assert fresh.status_code == 200 and fresh.headers["ETag"] != old_etag
        assert fresh.get_json() != old.get_json() and fresh.get_data() != b""
        assert hits() == before + 1
        again = client.get(url, headers={"If-None-Match": fresh.headers["ETag"]})
        assert again.status_code == 304 and again.headers["ETag"] == fresh.headers["ETag"]


def test_the_etag_is_the_same_on_a_hit_a_miss_and_with_the_cache_off(cached):
    client = cached.test_client()
    ids = shelf(cached)
    url = f"/api/products/?category={ids['lamps']}"
    missed = client.get(url).headers["ETag"]
    assert client.get(url).headers["ETag"] == missed
    with running(cache_app(None, CATALOG_CACHE=False)) as off:
        assert off.test_client().get(url).headers["ETag"] == missed


def test_concurrent_orders_and_readers_leave_the_cached_stock_equal_to_the_database(app):
    """Orders and page reads at once (readers storing what they read mid-race): the highest version wins."""
    need_service("TEST_DATABASE_URL (PostgreSQL)", os.environ.get("TEST_DATABASE_URL"))
    url = need_service("REDIS_URL", os.environ.get("REDIS_URL"))
    with running(cache_app(url)) as served:
        with served.app_context():
            product_id = make_product(name="Flash lamp", stock=20).id
            buyers = [make_user(username=f"buyer{n}", email=f"buyer{n}@example.com").id for n in range(30)]
        from flask_jwt_extended import create_access_token

        with served.app_context():
            tokens = [bearer(create_access_token(identity=user_id)) for user_id in buyers]
        pages = [f"/api/products/{product_id}/", "/api/products/", "/api/products/?in_stock=true"]
        barrier = threading.Barrier(len(tokens) * 2)
        statuses: list[int] = []

        def buy(headers: dict[str, str]) -> None:
            client = served.test_client()
            barrier.wait()
            placed = client.post(
                "/api/orders/", json={"items": [{"product_id": product_id, "quantity": 1}]}, headers=headers
            )
            statuses.append(placed.status_code)

        def read(n: int) -> None:
            client = served.test_client()
            barrier.wait()
            for _ in range(3):
                with served.app_context():
                    if n % 5 == 0:
                        catalog_changed()  # readers on the miss path, storing what they read mid-race
                client.get(pages[n % len(pages)])

        threads = [threading.Thread(target=buy, args=(headers,)) for headers in tokens]
        threads += [threading.Thread(target=read, args=(n,)) for n in range(len(tokens))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert sorted(statuses) == [201] * 20 + [409] * 10
        assert stock_version_of(served, product_id) == 20
        stored = redis_of(served).hget(served.config["CACHE_KEY_PREFIX"] + "catalog:stock", str(product_id))
        assert stored == b"20:0"
        client = served.test_client()
        for _ in range(2):  # whatever the race left stored, then certainly from the cache
            before = hits()
            assert client.get(pages[0]).get_json()["stock"] == 0
            assert client.get(pages[1]).get_json()[0]["stock"] == 0
            assert names(client, pages[2]) == []
        assert hits() == before + 3
