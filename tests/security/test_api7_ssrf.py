"""OWASP API7:2023 Server Side Request Forgery: the one URL a client gives the shop is a product's
image. Only http(s) URLs are stored, and the server never fetches one, whatever it points at."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from tests.factories import make_category
from tests.security.conftest import assert_error


@pytest.fixture
def category_id(app: Any) -> int:
    with app.app_context():
        return make_category().id


def _product(category_id: int, image: Any) -> dict[str, Any]:
    return {"name": "Lamp", "price": "9.99", "stock": 1, "category_id": category_id, "image": image}


@pytest.mark.parametrize(
    "image",
    [
        "file:///etc/passwd",
        "file://localhost/etc/shadow",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "dict://127.0.0.1:6379/INFO",
        "ftp://example.com/image.png",
        "ldap://127.0.0.1/",
        "jar:http://example.com/a.jar!/",
        "javascript:alert(document.cookie)",
        "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
        "//evil.example/image.png",
        "/etc/passwd",
        "http:/example.com",
        "http://",
        "http://exa mple.com/a.png",
        "http://example.com/a.png\r\nX-Injected: 1",
        "HTTP://example.com\\@127.0.0.1/",
        "https://" + "a" * 500 + ".com/",
    ],
)
def test_image_urls_other_than_http_or_https_are_refused(client, staff_headers, category_id, image):
    body = assert_error(client.post("/api/products/", json=_product(category_id, image), headers=staff_headers), 422)

    assert "image" in body["errors"]["json"]


@pytest.mark.parametrize("image", ["https://cdn.example.com/p/1.png", "http://example.com:8080/a.png?size=2", None])
def test_http_and_https_image_urls_are_stored_as_given(client, staff_headers, category_id, image):
    response = client.post("/api/products/", json=_product(category_id, image), headers=staff_headers)

    assert response.status_code == 201 and response.get_json()["image"] == image


def test_the_server_never_fetches_an_image_url(client, staff_headers, category_id):
    """An image pointing at a listener on this host: creating, changing, listing and ordering never connect."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    connections: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connections.append(listener.accept())
            except TimeoutError:
                continue

    watcher = threading.Thread(target=accept)
    watcher.start()
    try:
        created = client.post(
            "/api/products/", json=_product(category_id, f"http://127.0.0.1:{port}/a.png"), headers=staff_headers
        ).get_json()
        client.patch(
            f"/api/products/{created['id']}/",
            json={"image": f"http://127.0.0.1:{port}/metadata"},
            headers=staff_headers,
        )
        client.get(f"/api/products/{created['id']}/")
        client.get("/api/products/")
        client.post(
            "/api/orders/", json={"items": [{"product_id": created["id"], "quantity": 1}]}, headers=staff_headers
        )
    finally:
        stop.set()
        watcher.join()
        listener.close()

    assert created["image"] == f"http://127.0.0.1:{port}/a.png"
    assert connections == []
