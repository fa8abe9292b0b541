"""The servers of a run: the shop on gunicorn (cache on, cache off, limits off), the ceiling app, Nginx in front.

The one module that starts processes with the tests' helpers (tests/ops_processes.py)."""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

from bench.common import DETAIL_IDS, VENV_BIN, _wait, log
from bench.services import Postgres
from tests.ops_processes import (
    Server,
    free_port,
    gunicorn_env,
    load_nginx_render,
    nginx_user,
    start_gunicorn,
    start_nginx,
)

# Servers


@dataclass
class Stack:
    warm: str = ""  # shop, catalog cache on
    cold: str = ""  # shop, catalog cache off
    unlimited: str = ""  # shop, catalog cache on, rate limits off: what the limiter costs, measured
    ceiling: str = ""  # bench/ceiling_app.py
    nginx_warm: str = ""  # https, upstream: warm
    nginx_cold: str = ""  # https, upstream: cold
    warm_server: Server | None = None
    nginx_warm_prefix: Path | None = None
    pids: dict[str, int] = field(default_factory=dict)  # master process of each server, by name
    servers: list[Server] = field(default_factory=list)


def workers() -> int:
    return int(os.environ.get("WEB_CONCURRENCY") or (os.cpu_count() or 1) * 2 + 1)


def start_ceiling(port: int, env: dict[str, str], log_path: Path) -> Server:
    args = [str(VENV_BIN / "gunicorn"), "-c", "bench/gunicorn_ceiling.conf.py", "bench.ceiling_app:app"]
    server = Server(f"ceiling:{port}", args, log_path, env={**env, "BIND": f"127.0.0.1:{port}"})
    try:
        _wait(lambda: requests.get(f"http://127.0.0.1:{port}/cached/", timeout=2).status_code == 200, 30, "ceiling")
    except BaseException:
        server.kill()
        print(server.output()[-3000:])
        raise
    return server


def ecdsa_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate, the kind certbot issues by default: 10,000 clients connecting at
    once cost Nginx a TLS handshake each, and an ECDSA signature is a small fraction of an RSA-2048 one."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    command += ["-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    key.chmod(0o644)  # read by Nginx's workers (nobody), in a directory of this run's own
    return cert, key


def render_nginx(prefix: Path, upstream: str, static_page: Path | None) -> tuple[Path, int]:
    """nginx/render.py's config for one upstream, the per-address limit raised (all load comes from
    127.0.0.1), plus a location serving the list page's bytes as a static file (the ceiling)."""
    render = load_nginx_render()
    cert, key = ecdsa_certificate(prefix / "tls")
    https = free_port()
    text = render.render(
        user=nginx_user(),
        prefix=str(prefix),
        http_listen=f"127.0.0.1:{free_port()}",
        https_listen=f"127.0.0.1:{https}",
        status_listen=f"127.0.0.1:{free_port()}",
        cert=str(cert),
        key=str(key),
        upstream=[upstream],
        rate=10_000_000,
        burst=10_000_000,
    )
    # wrk opens every connection at the start and a shopper's first request comes up to a think time later;
    # a browser connects when its request is ready. Nginx's 10 s wait for a first request would cut them.
    assert "client_header_timeout 10s;" in text, "nginx template changed: update bench/run.py"
    text = text.replace("client_header_timeout 10s;", "client_header_timeout 60s;")
    if static_page is not None:
        anchor = "        # Metrics are for Prometheus"
        assert anchor in text, "nginx template changed: update bench/run.py's static location"
        location = (
            "        location = /bench/static-page.json {\n"
            f"            alias {static_page};\n"
            "            default_type application/json;\n"
            "        }\n\n"
        )
        text = text.replace(anchor, location + anchor, 1)
    config = prefix / "nginx.conf"
    config.write_text(text)
    return config, https


def start_stack(
    stack: Stack, env: dict[str, str], redis_url: str, pg: Postgres, work: Path, page_key: str, tools: dict[str, str]
) -> None:
    metrics = work / "metrics"
    base = gunicorn_env(pg.url.replace("postgresql://", "postgresql+psycopg2://"), metrics / "warm", **env)
    warm_port, cold_port, ceiling_port = free_port(), free_port(), free_port()
    log(f"starting the shop on gunicorn ({workers()} workers each): cache on :{warm_port}, cache off :{cold_port}")
    stack.warm_server = start_gunicorn(warm_port, workers(), base, work / "gunicorn-warm.log")
    stack.servers.append(stack.warm_server)
    stack.pids["warm"] = stack.warm_server.pid
    cold_env = {**base, "CATALOG_CACHE": "false", "PROMETHEUS_MULTIPROC_DIR": str(metrics / "cold")}
    stack.servers.append(start_gunicorn(cold_port, workers(), cold_env, work / "gunicorn-cold.log"))
    stack.pids["cold"] = stack.servers[-1].pid
    stack.warm, stack.cold = f"http://127.0.0.1:{warm_port}", f"http://127.0.0.1:{cold_port}"
    unlimited_port = free_port()
    unlimited_env = {**base, "RATELIMIT_ENABLED": "false", "PROMETHEUS_MULTIPROC_DIR": str(metrics / "unlimited")}
    stack.servers.append(start_gunicorn(unlimited_port, workers(), unlimited_env, work / "gunicorn-unlimited.log"))
    stack.pids["unlimited"] = stack.servers[-1].pid
    stack.unlimited = f"http://127.0.0.1:{unlimited_port}"

    # The ceilings' bytes: the shop's own first list page, exactly as it serves it.
    page = requests.get(f"{stack.warm}/api/products/", timeout=10)
    page.raise_for_status()
    import redis

    redis.Redis.from_url(redis_url).set(page_key, page.content)
    ceiling_env = {
        **base,
        "WEB_CONCURRENCY": str(workers()),
        "BENCH_PAGE_KEY": page_key,
        "BENCH_DSN": pg.url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics / "ceiling"),
    }
    log(f"starting the ceiling app on the same gunicorn settings :{ceiling_port}")
    stack.servers.append(start_ceiling(ceiling_port, ceiling_env, work / "gunicorn-ceiling.log"))
    stack.pids["ceiling"] = stack.servers[-1].pid
    stack.ceiling = f"http://127.0.0.1:{ceiling_port}"

    for name, upstream, with_static in (("warm", warm_port, True), ("cold", cold_port, False)):
        prefix = work / f"nginx-{name}"
        prefix.mkdir(mode=0o755)
        static_page = prefix / "static-page.json" if with_static else None
        if static_page:
            static_page.write_bytes(page.content)
            static_page.chmod(0o644)
        config, https = render_nginx(prefix, f"127.0.0.1:{upstream}", static_page)
        stack.servers.append(start_nginx(tools["nginx"], prefix, config, [https]))
        stack.pids[f"nginx_{name}"] = stack.servers[-1].pid
        setattr(stack, f"nginx_{name}", f"https://127.0.0.1:{https}")
        if name == "warm":
            stack.nginx_warm_prefix = prefix
    log(f"Nginx (TLS) in front: {stack.nginx_warm} (cache on), {stack.nginx_cold} (cache off)")


def prime_caches(stack: Stack) -> None:
    """Every page the warm scenarios ask for is in the shop's cache before they start."""
    with requests.Session() as session:
        for path in ["/api/products/", *(f"/api/products/{n}/" for n in range(1, DETAIL_IDS + 1))]:
            # A shared PostgreSQL may be restarting (503 meanwhile): wait for it, a bounded while.
            _wait(lambda path=path: session.get(f"{stack.warm}{path}", timeout=10).status_code == 200, 60, path)


def fetch_once(urls: tuple[str, ...]) -> None:
    """GET each URL once (the run's own self-signed certificate on loopback is not checked)."""
    with requests.Session() as session, warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        for url in urls:  # verify= per request: a CA bundle in the environment would override the session's
            session.get(url, timeout=10, verify=False).raise_for_status()
