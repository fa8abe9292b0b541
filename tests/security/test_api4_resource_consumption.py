"""OWASP API4:2023 Unrestricted Resource Consumption: page sizes, page numbers, body sizes, JSON depth,
item counts, quantities, string lengths and numbers beyond what the shop stores are all bounded.
(Request rates: test_ratelimits.py.)"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from shop.extensions import db
from shop.orders.models import Order
from shop.products.models import Product
from tests.factories import make_category, make_product
from tests.security.conftest import assert_error, concrete, operations

ROOT = Path(__file__).resolve().parents[2]
ONE_MIB = 1024 * 1024


def _paginated(spec: dict[str, Any]) -> list[str]:
    return [
        concrete(path)
        for method, path, operation in operations(spec)
        if method == "get" and any(p.get("name") == "page_size" for p in operation.get("parameters", []))
    ]


def test_every_list_caps_its_page_size_and_bounds_its_page(client, spec, staff_headers):
    lists = _paginated(spec)

    assert {"/api/products/", "/api/categories/", "/api/orders/", "/api/users/", "/api/orders/emails/"} <= set(lists)
    for path in lists:
        for query in ("page_size=101", "page_size=1000000", "page_size=0", "page=0", "page=-1", "page_size=x"):
            assert_error(client.get(f"{path}?{query}", headers=staff_headers), 422)
        assert client.get(f"{path}?page_size=100", headers=staff_headers).status_code == 200
        # A page far past the end (past any database integer) is an empty page, not a server error.
        far = client.get(f"{path}?page={2**70}", headers=staff_headers)
        assert far.status_code == 200 and far.get_json() == [], path
        assert json.loads(far.headers["X-Pagination"])["total"] == 0 or far.get_json() == []


def test_every_write_refuses_a_body_over_one_mib(client, spec, staff_headers):
    big = json.dumps({"name": "x" * (ONE_MIB + 1)})

    for method, path, _ in operations(spec):
        if method in {"post", "put", "patch"}:
            response = client.open(
                concrete(path), method=method.upper(), data=big, content_type="application/json", headers=staff_headers
            )
            assert_error(response, 413)


def _chunked(client: Any, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """A body without Content-Length, as gunicorn hands a chunked request to the app."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_body_sent_without_a_length_is_cut_at_one_mib(client, user_headers, product_id):
    big = json.dumps({"items": [{"product_id": 1, "quantity": 1}] * 60_000}).encode()
    assert len(big) > ONE_MIB

    assert_error(_chunked(client, "/api/orders/", big, user_headers), 413)
    # A small chunked body, or none, is read as usual.
    small = json.dumps({"items": [{"product_id": product_id, "quantity": 1}]}).encode()
    assert _chunked(client, "/api/orders/", small, user_headers).status_code == 201
    assert_error(_chunked(client, "/api/orders/999/cancel/", b"", user_headers), 404)


@pytest.mark.parametrize("depth", [100, 5_000, 100_000])
def test_deeply_nested_json_is_refused_without_a_server_error(client, user_headers, depth):
    body = "[" * depth + "]" * depth
    nested_object = '{"items": ' + body + "}"

    for data in (body, nested_object):
        response = client.post("/api/orders/", data=data, content_type="application/json", headers=user_headers)
        assert response.status_code in {400, 422}, (depth, response.status_code)
        assert_error(response, response.status_code)


def test_a_body_with_many_unknown_keys_is_refused(client):
    flood = {f"key{n}": n for n in range(50_000)}
    flood.update({"username": "x", "password": "y"})

    assert_error(client.post("/api/token/", json=flood), 422)


@pytest.fixture
def product_id(app: Any) -> int:
    with app.app_context():
        return make_product(price="10.00", stock=5_000).id


def _orders(app: Any) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Order))


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([], id="no items"),
        pytest.param([{"product_id": n, "quantity": 1} for n in range(1, 102)], id="101 items"),
        pytest.param([{"product_id": 1, "quantity": 1001}], id="quantity 1001"),
        pytest.param([{"product_id": 1, "quantity": 2**63}], id="quantity 2^63"),
        pytest.param([{"product_id": 2**70, "quantity": 1}], id="product id 2^70"),
    ],
)
def test_an_order_is_bounded_in_items_and_quantities(app, client, user_headers, product_id, items):
    assert_error(client.post("/api/orders/", json={"items": items}, headers=user_headers), 422)
    assert _orders(app) == 0


def test_an_order_whose_total_the_shop_cannot_record_is_422_and_takes_nothing(app, client, user_headers):
    """Prices and quantities within their bounds can still make a total beyond the total column."""
    with app.app_context():
        category = make_category()
        dear = [make_product(category, price="99999999.99", stock=1_000).id for _ in range(3)]
    items = [{"product_id": product, "quantity": 1_000} for product in dear]

    response = client.post("/api/orders/", json={"items": items}, headers=user_headers)

    assert_error(response, 422)
    assert _orders(app) == 0
    with app.app_context():
        assert db.session.scalar(select(func.sum(Product.stock)).where(Product.id.in_(dear))) == 3_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/users/", {"username": "u" * 151, "email": "a@example.com", "password": "p" * 10, "password2": "p" * 10}),
        ("/api/users/", {"username": "user", "email": "a@example.com", "password": "p" * 129, "password2": "p" * 129}),
        (
            "/api/users/",
            {"username": "user", "email": "a" * 250 + "@example.com", "password": "p" * 9, "password2": "p" * 9},
        ),
        ("/api/token/", {"username": "u" * 151, "password": "whatever"}),
        ("/api/token/", {"username": "alice", "password": "p" * 129}),
    ],
)
def test_long_strings_are_refused_before_any_hashing(client, path, body):
    """A megabyte password would cost a slow hash each; 128 characters is the most the shop hashes."""
    assert_error(client.post(path, json=body), 422)


def test_long_query_and_header_values_are_refused(client, user_headers, product_id):
    assert_error(client.get("/api/products/?search=" + "s" * 101), 422)
    assert_error(client.get("/api/products/?min_price=1e400"), 422)
    order = {"items": [{"product_id": product_id, "quantity": 1}]}
    response = client.post("/api/orders/", json=order, headers={**user_headers, "Idempotency-Key": "k" * 256})
    assert_error(response, 422)


def test_catalog_numbers_beyond_their_columns_are_refused(client, staff_headers, product_id):
    with client.application.app_context():
        category_id = db.session.get(Product, product_id).category_id
    base = {"name": "Lamp", "category_id": category_id}
    for body in ({**base, "price": "1e400"}, {**base, "price": "100000000.00"}, {**base, "price": "1", "stock": 2**31}):
        assert_error(client.post("/api/products/", json=body, headers=staff_headers), 422)
    assert_error(client.post(f"/api/products/{product_id}/stock/", json={"delta": 2**40}, headers=staff_headers), 422)


def test_gunicorn_bounds_request_lines_headers_and_time(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # else reading the file would set one for us all
    spec = importlib.util.spec_from_file_location("gunicorn_conf_for_test", ROOT / "gunicorn.conf.py")
    assert spec and spec.loader
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)

    assert 0 < conf.limit_request_line <= 8190 and 0 < conf.limit_request_fields <= 100
    assert 0 < conf.timeout <= 60
