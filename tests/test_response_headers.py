"""The headers a client relies on: Link on paginated lists (RFC 8288), the rate limit's, Retry-After only on 429/503."""

from __future__ import annotations

import json
import re

from tests.conftest import PASSWORD
from tests.factories import make_category, make_product
from tests.security.conftest import limited_app  # noqa: F401 - a fixture


def _links(response) -> dict[str, str]:
    """Link's targets by relation."""
    return {rel: url for url, rel in re.findall(r'<([^>]*)>; rel="([a-z]+)"', response.headers["Link"])}


def test_a_product_list_links_its_first_previous_next_and_last_pages_with_its_filters(app, client):
    with app.app_context():
        category = make_category()
        for n in range(7):
            make_product(category, name=f"Lamp {n}")

    url = f"/api/products/?page=2&page_size=2&category={category.id}&ordering=-name&unknown=1"
    miss, hit = client.get(url), client.get(url)

    query = f"page_size=2&category={category.id}&ordering=-name"
    expected = {
        rel: f"/api/products/?{query}&page={page}"
        for rel, page in [("first", 1), ("prev", 1), ("next", 3), ("last", 4)]
    }
    assert _links(miss) == expected
    assert hit.headers["Link"] == miss.headers["Link"]  # the cached page carries the same links
    pagination = json.loads(miss.headers["X-Pagination"])
    assert (pagination["page"], pagination["last_page"]) == (2, 4)
    assert [product["name"] for product in client.get(expected["next"]).get_json()] == ["Lamp 2", "Lamp 1"]


def test_a_single_page_links_only_first_and_last_and_a_page_past_the_end_too(app, client):
    with app.app_context():
        make_product()

    assert set(_links(client.get("/api/products/"))) == {"first", "last"}
    past = client.get("/api/products/?page=5")
    assert past.get_json() == [] and set(_links(past)) == {"first", "last"}


def test_an_empty_list_has_no_link(client):
    empty = client.get("/api/categories/")

    assert empty.get_json() == [] and "Link" not in empty.headers


def test_orders_are_linked_as_products_are(app, client, user_headers):
    with app.app_context():
        product = make_product(stock=10)
    for _ in range(3):
        order = {"items": [{"product_id": product.id, "quantity": 1}]}
        assert client.post("/api/orders/", json=order, headers=user_headers).status_code == 201

    page = client.get("/api/orders/?page_size=1&status=pending", headers=user_headers)

    assert _links(page)["next"] == "/api/orders/?page_size=1&status=pending&page=2"
    assert _links(page)["last"] == "/api/orders/?page_size=1&status=pending&page=3"


def test_rate_limited_answers_carry_the_limits_headers_and_no_retry_after(limited_app, user):  # noqa: F811
    app = limited_app(RATELIMIT_ANON="100/minute", RATELIMIT_AUTH="5/minute")
    client = app.test_client()

    page = client.get("/api/categories/")
    login = client.post("/api/token/", json={"username": "alice", "password": PASSWORD})
    refused_login = client.post("/api/token/", json={"username": "alice", "password": "wrong-pass"})

    assert page.status_code == 200 and page.headers["X-RateLimit-Limit"] == "100"
    assert int(page.headers["X-RateLimit-Remaining"]) == 99
    assert login.status_code == 200 and login.headers["X-RateLimit-Limit"] == "5"
    assert refused_login.status_code == 401
    for answer in (page, login, refused_login):
        assert "Retry-After" not in answer.headers  # only a 429 or 503 tells the client to wait
