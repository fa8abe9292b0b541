"""What the operations routes tell whom: /readyz's reasons only to private networks; docs that can be hidden."""

from __future__ import annotations

import socket

import pytest

from shop import create_app
from tests.conftest import app_config
from tests.security.conftest import assert_error, dispose


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def not_ready():
    app = create_app(app_config(REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0"))
    yield app
    dispose(app)


def test_readyz_names_what_failed_to_anyone_and_why_only_to_private_networks(not_ready) -> None:
    client = not_ready.test_client()

    public = client.get("/readyz", environ_base={"REMOTE_ADDR": "93.184.216.34"})
    private = client.get("/readyz", environ_base={"REMOTE_ADDR": "10.1.2.3"})

    body = assert_error(public, 503)
    assert body["message"] == "Not ready: redis" and body["errors"] == {"redis": ["unavailable"]}
    assert "127.0.0.1" not in public.get_data(as_text=True) and "Error" not in public.get_data(as_text=True)
    assert "ConnectionError" in assert_error(private, 503)["errors"]["redis"][0]


def test_readyz_trusts_the_forwarded_address_only_through_trusted_proxies(not_ready) -> None:
    not_ready.config["TRUSTED_PROXIES"] = 1
    client = not_ready.test_client()

    through_proxy = client.get(
        "/readyz", headers={"X-Forwarded-For": "10.0.0.1, 93.184.216.34"}, environ_base={"REMOTE_ADDR": "127.0.0.1"}
    )

    assert assert_error(through_proxy, 503)["errors"] == {"redis": ["unavailable"]}


def test_api_docs_off_serves_no_document_and_no_docs_pages(monkeypatch) -> None:
    monkeypatch.setenv("API_DOCS", "false")
    app = create_app(app_config())
    try:
        client = app.test_client()
        for path in ("/api/openapi.json", "/api/docs/", "/api/redoc/"):
            assert_error(client.get(path), 404)
        assert client.get("/api/products/").status_code == 200
    finally:
        dispose(app)
