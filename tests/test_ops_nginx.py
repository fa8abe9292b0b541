"""Nginx in front of two gunicorn instances, on loopback, with the project's own config and TLS."""

from __future__ import annotations

import gzip
import re
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.conftest import PASSWORD
from tests.factories import make_product, make_user
from tests.ops_processes import (
    ROOT,
    Server,
    free_port,
    gunicorn_env,
    load_nginx_render,
    make_certificate,
    metric_sum,
    need_binary,
    nginx_prefix,
    nginx_user,
    parse_metrics,
    running,
    start_gunicorn,
    start_nginx,
)

pytestmark = pytest.mark.services


@dataclass
class Edge:
    """Nginx's two public ports and the app instances behind it."""

    http: int
    https: int
    status: int
    cert: Path
    apps: dict[int, Server]
    nginx: Server
    prefix: Path

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.https}{path}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url(path), verify=str(self.cert), timeout=10, **kwargs)


def _render(prefix: Path, cert: Path, key: Path, upstreams: list[str], **extra: Any) -> tuple[Path, dict[str, int]]:
    ports = {"http": free_port(), "https": free_port(), "status": free_port()}
    text = load_nginx_render().render(
        user=nginx_user(),
        prefix=str(prefix),
        http_listen=f"127.0.0.1:{ports['http']}",
        https_listen=f"127.0.0.1:{ports['https']}",
        status_listen=f"127.0.0.1:{ports['status']}",
        cert=str(cert),
        key=str(key),
        upstream=upstreams,
        **extra,
    )
    config = prefix / "nginx.conf"
    config.write_text(text)
    return config, ports


@contextmanager
def _edge(app: Flask, work: Path) -> Iterator[Edge]:
    """Nginx with TLS → two gunicorn instances (2 workers each) sharing the test database."""
    nginx = need_binary("nginx")
    database_url = app.config["SQLALCHEMY_DATABASE_URI"]
    app_ports = [free_port(), free_port()]
    apps: dict[int, Server] = {}
    with nginx_prefix() as prefix:
        try:
            for port in app_ports:
                env = gunicorn_env(database_url, work / f"metrics-{port}")
                apps[port] = start_gunicorn(port, 2, env, work / f"gunicorn-{port}.log")
            cert, key = make_certificate(prefix / "tls")
            config, ports = _render(prefix, cert, key, [f"127.0.0.1:{port}" for port in app_ports])
            server = start_nginx(nginx, prefix, config, list(ports.values()))
            with running(server):
                yield Edge(ports["http"], ports["https"], ports["status"], cert, apps, server, prefix)
        finally:
            for instance in apps.values():
                instance.stop()


@pytest.fixture(scope="module")
def edge(app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """One stack for the tests that leave it as they found it."""
    with _edge(app, tmp_path_factory.mktemp("edge")) as stack:
        yield stack


@pytest.fixture
def own_edge(app: Flask, tmp_path: Path) -> Iterator[Edge]:
    """A stack of the test's own, for a test that breaks it."""
    with _edge(app, tmp_path) as stack:
        yield stack


def test_the_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = need_binary("nginx")
    with nginx_prefix() as prefix:
        cert, key = make_certificate(prefix / "tls")
        config, _ = _render(prefix, cert, key, ["127.0.0.1:1", "127.0.0.1:2"])
        result = subprocess.run(
            [nginx, "-t", "-p", str(prefix), "-c", str(config)], capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_the_compose_config_is_the_template_rendered_for_compose() -> None:
    render = load_nginx_render()
    committed = (ROOT / "nginx" / "nginx.compose.conf").read_text()
    assert committed == render.render(**render.PRESETS["compose"]), "run: python3 nginx/render.py --preset compose"
    assert "server app:8000" in committed
    assert "user nginx;" in committed


def test_https_serves_the_api_and_http_redirects_to_it(edge: Edge, app: Flask) -> None:
    with app.app_context():
        make_product(name="Kettle")

    response = edge.get("/api/products/")
    assert response.status_code == 200
    assert [product["name"] for product in response.json()] == ["Kettle"]
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Server" not in response.headers or "nginx/" not in response.headers["Server"]

    plain = requests.get(f"http://127.0.0.1:{edge.http}/api/products/?page=1", allow_redirects=False, timeout=10)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://127.0.0.1:{edge.https}/api/products/?page=1"


def test_request_ids_are_passed_through_or_made_and_reach_the_app_log(edge: Edge) -> None:
    given = edge.get("/healthz", headers={"X-Request-ID": "trace-42.abc"})
    assert given.headers["X-Request-ID"] == "trace-42.abc"

    made = edge.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    assert len(made.raw.headers.getlist("X-Request-ID")) == 1  # one header, not the app's and Nginx's both

    logs = "".join(server.output() for server in edge.apps.values())
    assert '"request_id": "trace-42.abc"' in logs
    assert f'"request_id": "{made.headers["X-Request-ID"]}"' in logs


def test_json_is_gzipped_and_bodies_over_one_mebibyte_are_refused(edge: Edge) -> None:
    spec = requests.get(
        edge.url("/api/openapi.json"),
        verify=str(edge.cert),
        timeout=10,
        headers={"Accept-Encoding": "gzip"},
        stream=True,
    )
    assert spec.status_code == 200
    assert spec.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(spec.raw.read()).startswith(b"{")

    too_big = requests.post(
        edge.url("/api/users/"),
        data=b"{" + b" " * (1024 * 1024 + 10) + b"}",
        headers={"Content-Type": "application/json"},
        verify=str(edge.cert),
        timeout=10,
    )
    assert too_big.status_code == 413
    assert too_big.json() == {
        "code": 413,
        "status": "Request Entity Too Large",
        "message": "The request body is larger than 1 MiB.",
    }


def test_metrics_are_not_reachable_through_nginx(edge: Edge) -> None:
    refused = edge.get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["code"] == 403
    assert "shop_" not in refused.text
    port = next(iter(edge.apps))
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    status = requests.get(f"http://127.0.0.1:{edge.status}/stub_status", timeout=5)
    assert status.status_code == 200
    assert "Active connections" in status.text


def test_micro_cache_serves_anonymous_catalog_reads_and_never_authenticated_ones(edge: Edge, app: Flask) -> None:
    with app.app_context():
        make_product(name="Teapot")
        make_user(username="carol", email="carol@example.com", password=PASSWORD)
    token = requests.post(
        edge.url("/api/token/"), json={"username": "carol", "password": PASSWORD}, verify=str(edge.cert), timeout=10
    ).json()["access"]
    authorized = {"Authorization": f"Bearer {token}"}

    # Authenticated reads go to the app every time, and leave nothing in the cache for others.
    for _ in range(3):
        response = edge.get("/api/products/?ordering=name", headers=authorized)
        assert response.status_code == 200
        assert response.headers["X-Cache-Status"] == "BYPASS"
    assert edge.get("/api/products/?ordering=name").headers["X-Cache-Status"] in {"MISS", "EXPIRED"}

    # Anonymous reads: back to back, the second comes from the micro-cache (entries live 1 s, so
    # a slow machine may need another pair).
    statuses = []
    for attempt in range(5):
        first = edge.get(f"/api/products/?page=1&try={attempt}")
        second = edge.get(f"/api/products/?page=1&try={attempt}")
        assert first.status_code == second.status_code == 200
        assert second.json() == first.json()
        statuses.append(second.headers["X-Cache-Status"])
        if statuses[-1] == "HIT":
            break
    assert "HIT" in statuses

    # A cached anonymous page is never what an authenticated client gets.
    assert edge.get(f"/api/products/?page=1&try={attempt}", headers=authorized).headers["X-Cache-Status"] == "BYPASS"


def _requests_served(port: int) -> float:
    samples = parse_metrics(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    return metric_sum(samples, "flask_http_request_total")


def test_both_instances_receive_traffic(edge: Edge) -> None:
    before = {port: _requests_served(port) for port in edge.apps}
    for _ in range(40):
        assert edge.get("/healthz").status_code == 200
    served = {port: _requests_served(port) - before[port] for port in edge.apps}
    assert all(count > 0 for count in served.values()), served
    assert sum(served.values()) == 40


def test_gets_keep_succeeding_when_an_instance_is_killed_mid_run(own_edge: Edge) -> None:
    edge = own_edge
    victim_port, victim = next(iter(edge.apps.items()))
    statuses = []
    with requests.Session() as session:
        for number in range(120):
            if number == 40:
                victim.kill()
            response = session.get(edge.url("/api/openapi.json" if number % 2 else "/healthz"), verify=str(edge.cert))
            statuses.append(response.status_code)
    assert statuses == [200] * 120
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{victim_port}/healthz", timeout=2)


class _AcceptAndHangUp(socketserver.BaseRequestHandler):
    """An instance that dies after receiving the request: reads it, closes without an answer."""

    def handle(self) -> None:
        self.request.recv(65536)
        self.request.shutdown(socket.SHUT_RDWR)


def test_failed_gets_are_retried_on_another_instance_but_posts_never(app: Flask, tmp_path: Path) -> None:
    nginx = need_binary("nginx")
    port = free_port()
    broken = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _AcceptAndHangUp)
    threading.Thread(target=broken.serve_forever, daemon=True).start()
    good = start_gunicorn(port, 1, gunicorn_env(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path / "m"), tmp_path / "g")
    try:
        with nginx_prefix() as prefix:
            cert, key = make_certificate(prefix / "tls")
            # max_fails=0: the broken instance keeps its turn in the rotation.
            upstreams = [f"127.0.0.1:{broken.server_address[1]}", f"127.0.0.1:{port}"]
            config, ports = _render(prefix, cert, key, upstreams, max_fails=0)
            server = start_nginx(nginx, prefix, config, list(ports.values()))
            with running(server):
                base = f"https://127.0.0.1:{ports['https']}"
                gets = [requests.get(base + "/healthz", verify=str(cert), timeout=10).status_code for _ in range(6)]
                posts = [
                    requests.post(
                        base + "/api/token/", json={"username": "x", "password": "y"}, verify=str(cert), timeout=10
                    )
                    for _ in range(6)
                ]
    finally:
        good.stop()
        broken.shutdown()
        broken.server_close()
    assert gets == [200] * 6
    # A POST that reached the broken instance is answered 502, never sent again to the good one.
    assert {post.status_code for post in posts} == {401, 502}, [post.status_code for post in posts]
    bad_gateway = next(post for post in posts if post.status_code == 502)
    assert bad_gateway.json() == {
        "code": 502,
        "status": "Bad Gateway",
        "message": "The shop is not answering; retry shortly.",
    }
    assert bad_gateway.headers["Retry-After"] == "1"


def test_the_first_rate_limit_answers_429_in_the_shops_error_body(app: Flask, tmp_path: Path) -> None:
    nginx = need_binary("nginx")
    port = free_port()
    good = start_gunicorn(port, 1, gunicorn_env(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path / "m"), tmp_path / "g")
    try:
        with nginx_prefix() as prefix:
            cert, key = make_certificate(prefix / "tls")
            config, ports = _render(prefix, cert, key, [f"127.0.0.1:{port}"], rate=1, burst=2)
            server = start_nginx(nginx, prefix, config, list(ports.values()))
            with running(server), requests.Session() as session:
                answers = [
                    session.get(f"https://127.0.0.1:{ports['https']}/healthz", verify=str(cert), timeout=10)
                    for _ in range(10)
                ]
    finally:
        good.stop()
    statuses = [answer.status_code for answer in answers]
    assert statuses[:3] == [200, 200, 200]  # the rate plus its burst
    assert 429 in statuses
    limited = next(answer for answer in answers if answer.status_code == 429)
    assert limited.headers["Content-Type"] == "application/json"
    assert limited.json()["code"] == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["X-Request-ID"]
