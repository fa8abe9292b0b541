"""Nginx in front of two gunicorn instances, on loopback, with the project's own config and TLS."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.conftest import PASSWORD, need_service
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
from tests.reliability.stack import access_lines

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

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url(path), verify=str(self.cert), timeout=10, **kwargs)


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
def _edge(app: Flask, work: Path, render: dict[str, Any] | None = None, **env_extra: str) -> Iterator[Edge]:
    """Nginx with TLS → two gunicorn instances (2 workers each) sharing the test database."""
    nginx = need_binary("nginx")
    database_url = app.config["SQLALCHEMY_DATABASE_URI"]
    app_ports = [free_port(), free_port()]
    apps: dict[int, Server] = {}
    with nginx_prefix() as prefix:
        try:
            for port in app_ports:
                env = gunicorn_env(database_url, work / f"metrics-{port}", **env_extra)
                apps[port] = start_gunicorn(port, 2, env, work / f"gunicorn-{port}.log")
            cert, key = make_certificate(prefix / "tls")
            config, ports = _render(prefix, cert, key, [f"127.0.0.1:{port}" for port in app_ports], **(render or {}))
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


def test_tls_is_mozillas_intermediate_profile_with_no_high_or_critical_finding(edge: Edge, tmp_path: Path) -> None:
    """testssl.sh (the Debian package .ci/run installs) against the rendered config: only AEAD suites with
    forward secrecy on TLS 1.2, TLS 1.3, nothing older, and no finding of HIGH or CRITICAL severity."""
    testssl = need_service("`testssl` (a Debian package .ci/run installs)", shutil.which("testssl"))
    report = tmp_path / "testssl.json"
    subprocess.run(
        [
            testssl,
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--sneaky",
            "--protocols",
            "--std",
            "--server-defaults",
            "--vulnerable",
            "--jsonfile",
            str(report),
            f"127.0.0.1:{edge.https}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    findings = json.loads(report.read_text())
    # The certificate is the test's own self-signed one (a production one comes from Let's Encrypt):
    # what is judged here is the configuration.
    severe = [
        f"{item['id']}: {item['finding']}"
        for item in findings
        if item["severity"] in {"HIGH", "CRITICAL"} and not item["id"].startswith("cert_")
    ]
    offered = {item["id"]: item["finding"] for item in findings}

    assert severe == []
    assert offered["SSLv3"] == "not offered" and offered["TLS1"] == "not offered" and offered["TLS1_1"] == "not offered"
    assert offered["TLS1_3"].startswith("offered")
    for suites in (
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",  # TLS 1.2 suites without AEAD (CBC)
    ):
        assert offered.get(suites) == "not offered", (suites, offered.get(suites), sorted(offered))


def test_request_ids_are_passed_through_or_made_and_reach_the_app_log(edge: Edge) -> None:
    given = edge.get("/healthz", headers={"X-Request-ID": "trace-42.abc"})
    assert given.headers["X-Request-ID"] == "trace-42.abc"

    made = edge.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    assert len(made.raw.headers.getlist("X-Request-ID")) == 1  # one header, not the app's and Nginx's both
    for catalog in ("/api/categories/", "/api/products/?request-id=1"):  # the micro-cached location too
        answer = edge.get(catalog, headers={"X-Request-ID": "trace-43.abc", "Cache-Control": "no-cache"})
        assert answer.raw.headers.getlist("X-Request-ID") == ["trace-43.abc"]

    logs = "".join(server.output() for server in edge.apps.values())
    logged = {line["request_id"] for line in access_lines(logs) if "request_id" in line}
    assert {"trace-42.abc", made.headers["X-Request-ID"]} <= logged


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


def _raw_https(edge: Edge, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client library would send, over TLS; the status, headers and body of the answer."""
    import ssl

    context = ssl.create_default_context(cafile=str(edge.cert))
    with (
        socket.create_connection(("127.0.0.1", edge.https), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _assert_error_body(status: int, headers: dict[str, str], body: bytes, code: int) -> dict[str, Any]:
    """The shop's one error body: JSON with code, status and message, never an HTML page."""
    import json

    assert status == code, body
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert set(payload) == {"code", "status", "message"} and payload["code"] == code and payload["message"]
    assert "retry-after" not in headers
    return payload


def test_errors_nginx_answers_itself_are_the_shops_json_error_body(edge: Edge) -> None:
    """Malformed requests, too long a URI, too large headers, plain HTTP on the TLS port: JSON, as the app's."""
    host = f"Host: 127.0.0.1:{edge.https}\r\n".encode()
    malformed = _raw_https(edge, b"GET /api/products/ HTTP/1.1\r\n" + host + b"Content-Length: x\r\n\r\n")
    _assert_error_body(*malformed, 400)

    long_uri = edge.get("/api/products/?search=" + "a" * 9000)
    _assert_error_body(long_uri.status_code, dict(long_uri.headers.lower_items()), long_uri.content, 414)

    big_headers = edge.get("/api/products/", headers={"X-Big": "b" * 9000})
    payload = _assert_error_body(
        big_headers.status_code, dict(big_headers.headers.lower_items()), big_headers.content, 431
    )
    assert payload["status"] == "Request Header Fields Too Large"

    internal = edge.get("/.errors/400")  # where Nginx sends its own 400s, not a page of its own
    _assert_error_body(internal.status_code, dict(internal.headers.lower_items()), internal.content, 404)

    plain = requests.get(f"http://127.0.0.1:{edge.https}/api/products/", timeout=10)
    payload = _assert_error_body(plain.status_code, dict(plain.headers.lower_items()), plain.content, 400)
    assert "HTTPS" in payload["message"]


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


def _token(edge: Edge, username: str) -> str:
    answer = edge.post("/api/token/", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return answer.json()["access"]


def _twice_cached(edge: Edge, path: str, **kwargs: Any) -> list[requests.Response]:
    """GET until an answer comes from the micro-cache (a page lives a few seconds: one retry is plenty)."""
    answers = []
    for _ in range(5):
        answers.append(edge.get(path, **kwargs))
        if answers[-1].headers.get("X-Cache-Status") == "HIT":
            break
    return answers


def _cached_keys(edge: Edge) -> list[str]:
    """The key of every entry in Nginx's cache directory (each file holds its key in a `KEY:` line)."""
    keys = []
    for entry in (edge.prefix / "microcache").rglob("*"):
        if entry.is_file():
            match = re.search(rb"\nKEY: ([^\n]*)\n", entry.read_bytes()[:4096])
            assert match, f"an entry without a key: {entry}"
            keys.append(match.group(1).decode())
    return keys


def test_catalog_reads_are_micro_cached_with_or_without_a_token(edge: Edge, app: Flask) -> None:
    with app.app_context():
        make_product(name="Teapot")
        make_user(username="carol", email="carol@example.com", password=PASSWORD)
        make_user(username="dave", email="dave@example.com", password=PASSWORD)
    carol, dave = _token(edge, "carol"), _token(edge, "dave")

    # Anonymous, then each user with a token: all served the one copy, which holds no token.
    anonymous = _twice_cached(edge, "/api/products/?ordering=name")
    assert anonymous[0].headers["X-Cache-Status"] in {"MISS", "EXPIRED", "STALE", "UPDATING"}
    assert anonymous[-1].headers["X-Cache-Status"] == "HIT"
    for token in (carol, dave):
        answer = edge.get("/api/products/?ordering=name", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert answer.headers["X-Cache-Status"] in {"HIT", "UPDATING", "STALE"}
        assert answer.json() == anonymous[0].json() == [anonymous[0].json()[0]]
        assert "no-store" not in answer.headers.get("Cache-Control", "")
    teapot = anonymous[0].json()[0]["id"]
    for path in ("/api/categories/", f"/api/products/{teapot}/"):
        assert (
            _twice_cached(edge, path, headers={"Authorization": f"Bearer {carol}"})[-1].headers["X-Cache-Status"]
            == "HIT"
        )
    files = b"".join(entry.read_bytes() for entry in (edge.prefix / "microcache").rglob("*") if entry.is_file())
    assert carol.encode() not in files and dave.encode() not in files
    assert "/api/products/?ordering=name" in _cached_keys(edge)


def test_no_answer_that_depends_on_the_user_is_ever_stored(edge: Edge, app: Flask) -> None:
    with app.app_context():
        product_id = make_product(name="Cup", stock=10).id
        make_user(username="erin", email="erin@example.com", password=PASSWORD)
        make_user(username="frank", email="frank@example.com", password=PASSWORD, is_staff=True)
    tokens = {"erin": _token(edge, "erin"), "frank": _token(edge, "frank")}
    orders = {}
    for name, token in tokens.items():
        placed = edge.post(
            "/api/orders/",
            json={"items": [{"product_id": product_id, "quantity": 1}]},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"nginx-{name}"},
        )
        assert placed.status_code == 201, placed.text
        orders[name] = placed.json()["id"]

    private = ["/api/orders/", "/api/users/me/", "/api/users/", *(f"/api/orders/{n}/" for n in orders.values())]
    seen: dict[tuple[str, str], str] = {}
    for _ in range(3):  # each user, back to back, several times: a stored answer would come back as a HIT
        for name, token in tokens.items():
            for path in private:
                answer = edge.get(path, headers={"Authorization": f"Bearer {token}"})
                assert answer.headers.get("X-Cache-Status") in {None, "BYPASS", "MISS"}, (path, answer.headers)
                assert answer.headers["Cache-Control"] == "no-store"
                seen.setdefault((name, path), answer.text)
                assert answer.text == seen[(name, path)]
            issued = edge.post("/api/token/", json={"username": name, "password": PASSWORD})
            assert issued.headers.get("X-Cache-Status") in {None, "BYPASS", "MISS"}
            assert issued.headers["Cache-Control"] == "no-store"
    # Each saw their own: the other's order is not theirs to read, and /me is each one's own.
    assert seen[("erin", "/api/users/me/")] != seen[("frank", "/api/users/me/")]
    assert (
        edge.get(f"/api/orders/{orders['frank']}/", headers={"Authorization": f"Bearer {tokens['erin']}"}).status_code
        == 404
    )
    assert all(key.startswith(("/api/products/", "/api/categories/")) for key in _cached_keys(edge)), _cached_keys(edge)


def test_a_client_asking_for_no_cache_gets_and_stores_the_fresh_page(edge: Edge, app: Flask) -> None:
    with app.app_context():
        product_id = make_product(name="Saucer", stock=5).id
        make_user(username="grace", email="grace@example.com", password=PASSWORD, is_staff=True)
    staff = {"Authorization": f"Bearer {_token(edge, 'grace')}"}
    path = f"/api/products/{product_id}/"
    assert edge.get(path, headers={"Cache-Control": "no-cache"}).json()["stock"] == 5
    assert _twice_cached(edge, path)[-1].json()["stock"] == 5

    changed = requests.patch(edge.url(path), json={"stock": 4}, headers=staff, verify=str(edge.cert), timeout=10)
    assert changed.status_code == 200, changed.text
    # The writer asks past the copy and gets its write; the copy everyone gets is now that answer.
    fresh = edge.get(path, headers={**staff, "Cache-Control": "no-cache"})
    assert fresh.headers["X-Cache-Status"] == "BYPASS"
    assert fresh.json()["stock"] == 4
    again = _twice_cached(edge, path)
    assert again[-1].headers["X-Cache-Status"] == "HIT"
    assert [answer.json()["stock"] for answer in again] == [4] * len(again)


def _rate_limited_edge_env(app: Flask) -> dict[str, str]:
    redis_url = need_service("REDIS_URL", app.config.get("REDIS_URL"))
    return {"RATELIMIT_ENABLED": "true", "RATELIMIT_ANON": "1000/minute", "REDIS_URL": redis_url}


def test_rate_limit_headers_are_never_replayed_from_the_micro_cache(app: Flask, tmp_path: Path) -> None:
    with app.app_context():
        make_product(name="Jug")
    with _edge(app, tmp_path, **_rate_limited_edge_env(app)) as edge:
        answers = _twice_cached(edge, "/api/products/?ordering=-name")
        # The app answered the first: its own figures for this client, passed on.
        assert answers[0].headers["X-Cache-Status"] != "HIT"
        assert answers[0].headers["X-RateLimit-Limit"] == "1000"
        # Nginx answered the last from its copy: no other request's figures come with it.
        assert answers[-1].headers["X-Cache-Status"] == "HIT"
        for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"):
            assert name not in answers[-1].headers
        # A request the app answers itself gets its own figures, in the cached location too.
        fresh = edge.get("/api/products/?ordering=-name", headers={"Cache-Control": "no-cache"})
        assert fresh.headers["X-Cache-Status"] == "BYPASS"
        assert int(fresh.headers["X-RateLimit-Remaining"]) < int(answers[0].headers["X-RateLimit-Remaining"])


def test_an_expired_copy_is_refreshed_with_what_changed(app: Flask, tmp_path: Path) -> None:
    with app.app_context():
        product_id = make_product(name="Whisk", stock=7).id
        make_user(username="heidi", email="heidi@example.com", password=PASSWORD, is_staff=True)
    path = f"/api/products/{product_id}/"
    with _edge(app, tmp_path, render={"micro_cache_seconds": 1}) as edge:
        assert _twice_cached(edge, path)[-1].json()["stock"] == 7
        staff = {"Authorization": f"Bearer {_token(edge, 'heidi')}"}
        changed = requests.patch(edge.url(path), json={"stock": 6}, headers=staff, verify=str(edge.cert), timeout=10)
        assert changed.status_code == 200, changed.text
        time.sleep(2.5)  # the copy has expired (Nginx counts whole seconds)

        # The first answer may be the old copy while it is refreshed (asked with its ETag, which no
        # longer matches); the refreshed copy has the change.
        stocks = [edge.get(path).json()["stock"] for _ in range(20)]
        assert stocks[-1] == 6
        assert stocks == sorted(stocks, reverse=True)  # never back to the old copy once refreshed


def test_catalog_pages_are_answered_from_their_copy_while_the_app_is_down(app: Flask, tmp_path: Path) -> None:
    with app.app_context():
        make_product(name="Ladle")
    with _edge(app, tmp_path, render={"micro_cache_seconds": 1}) as edge:
        fresh = _twice_cached(edge, "/api/products/?ordering=price")[-1]
        assert fresh.headers["X-Cache-Status"] == "HIT"
        for instance in edge.apps.values():
            instance.kill()
        time.sleep(2.5)  # the copy has expired (Nginx counts whole seconds): it would ask the app, which is gone

        answer = edge.get("/api/products/?ordering=price")
        assert answer.status_code == 200
        assert answer.headers["X-Cache-Status"] in {"STALE", "UPDATING"}
        assert answer.json() == fresh.json()
        # What has no copy, and everything outside the catalog, fails as the app does.
        assert edge.get("/api/products/?ordering=-price").status_code == 502
        assert edge.get("/healthz").status_code == 502


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
    assert "Retry-After" not in bad_gateway.headers  # only a 429 or 503 says when to come back


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
