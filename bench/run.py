"""`make bench`: the shop against this machine's own ceilings, every figure a ratio taken in the same run.

    .venv/bin/python bench/run.py                 # full run, writes docs/performance.md and its chart
    .venv/bin/python bench/run.py --seconds 3 --rounds 1 --mix-seconds 10 --mix-connections 1000  # smoke
    .venv/bin/python bench/run.py --profile       # py-spy on the shop's workers under each direct scenario

Starts on loopback, and stops when it ends (also on Ctrl-C): a PostgreSQL database of its own
(`shop_bench_run_<pid>`, migrated, 10,000 products in 20 categories by `flask seed`), keys under
its own prefix in Redis db 8 (its own redis-server when none answers), a RabbitMQ vhost when
`rabbitmqctl` works (else the email task runs in-process), and:
- the shop on gunicorn with the production config (APP_ENV=production, generated secrets, every
  extension on, rate limits raised far above the load): instance A with the catalog cache,
  instance B with it off (CATALOG_CACHE=false), both behind Nginx rendered by nginx/render.py;
- the ceilings: bench/ceiling_app.py on the same gunicorn settings (the list page's bytes from
  Redis; the same page by plain psycopg2), Nginx serving those bytes as a static file, and
  pgbench running the order's SQL (bench/order_transaction.sql, 16 clients).
Each scenario runs wrk (-t2 -c32, --seconds a round) next to its ceiling, `--rounds` times
interleaved; then --mix-connections shoppers through Nginx for --mix-seconds (bench/mix.lua).
Environment: BENCH_SECONDS, BENCH_ROUNDS, BENCH_MIX_SECONDS, BENCH_MIX_CONNECTIONS, BENCH_MIX_RATE,
BENCH_REDIS_URL (default redis://127.0.0.1:6379/8), BENCH_BROKER (auto|none), PGHOST, PGPORT, PGUSER,
WEB_CONCURRENCY.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent

import requests  # noqa: E402

from bench import flash_sale  # noqa: E402
from bench.report import (  # noqa: E402
    Measure,
    chart,
    done_when_section,
    markdown_table,
    mix_checks,
    rows_of,
    sale_section,
    terminal_table,
    verdict,
    write_markdown,
)
from tests.ops_processes import (  # noqa: E402
    Server,
    free_port,
    gunicorn_env,
    load_nginx_render,
    nginx_user,
    start_gunicorn,
    start_nginx,
)

PRODUCTS = 10_000
CATEGORIES = 20
PAGES = PRODUCTS // 20
DETAIL_IDS = 1000  # product pages cached before the detail scenario, and chosen from
BUYERS = flash_sale.BUYERS  # each with a token of their own
HOT = PRODUCTS  # the flash sale's product (HOT_STOCK units); every other order goes to 1..SPREAD
SPREAD = PRODUCTS - 1
MICRO_CACHE_SECONDS = 5  # nginx/render.py's default, stated in the report
RAISED_LIMIT = "100000000/minute"
APT_PACKAGES = {"wrk": "wrk", "nginx": "nginx", "pgbench": "postgresql-client", "openssl": "openssl"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> float:
    return os.getloadavg()[0]


# Tools and limits


def ensure_tools() -> dict[str, str]:
    """wrk, nginx, pgbench and openssl from Debian's packages, installed when missing (as root)."""
    missing = sorted({package for name, package in APT_PACKAGES.items() if not shutil.which(name)})
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        log(f"installing {', '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        install = [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        subprocess.run(install, check=True, env=env)
    paths = {name: shutil.which(name) for name in APT_PACKAGES}
    absent = [name for name, path in paths.items() if not path]
    if absent:
        sys.exit(f"bench: not installed: {', '.join(absent)}")
    return {name: str(path) for name, path in paths.items()}


def raise_open_files(wanted: int = 65536) -> int:
    """Enough file descriptors for 10,000 connections in wrk and in Nginx (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((wanted, max(wanted, hard)), (min(wanted, hard), hard)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
    return soft


# Services: PostgreSQL database, Redis, RabbitMQ vhost


@dataclass
class Postgres:
    host: str = field(default_factory=lambda: os.environ.get("PGHOST", "127.0.0.1"))
    port: str = field(default_factory=lambda: os.environ.get("PGPORT", "5432"))
    user: str = field(default_factory=lambda: os.environ.get("PGUSER", "postgres"))
    name: str = field(default_factory=lambda: f"shop_bench_run_{os.getpid()}")

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.name}"

    def args(self) -> list[str]:
        return ["-h", self.host, "-p", self.port, "-U", self.user]

    def create(self) -> None:
        try:  # a restart by someone else may be under way
            _wait(lambda: subprocess.run(["pg_isready", "-q", *self.args()]).returncode == 0, 90, "PostgreSQL")
        except RuntimeError:
            sys.exit(f"bench: PostgreSQL does not answer on {self.host}:{self.port} (PGHOST, PGPORT, PGUSER)")
        subprocess.run(["createdb", *self.args(), self.name], check=True)

    def sql(self, statement: str) -> str:
        result = subprocess.run(
            ["psql", *self.args(), "-d", self.name, "-Atqc", statement], check=True, capture_output=True, text=True
        )
        return result.stdout.strip()

    def drop(self) -> None:
        subprocess.run(["dropdb", *self.args(), "--if-exists", "--force", self.name], check=False)


@contextlib.contextmanager
def redis_db(work: Path) -> Iterator[str]:
    """BENCH_REDIS_URL (default db 8 on the local Redis), or a redis-server of our own when none answers."""
    import redis

    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        binary = shutil.which("redis-server")
        if not binary:
            sys.exit(f"bench: Redis does not answer at {url} and redis-server is not installed")
        port = free_port()
        log(f"no Redis at {url}: starting redis-server on 127.0.0.1:{port}")
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        server = Server("redis", [*args, "--dir", str(work)], work / "redis.log")
        url = f"redis://127.0.0.1:{port}/8"
        try:
            _wait(lambda: redis.Redis.from_url(url).ping(), 10, "redis-server")
            yield url
        finally:
            server.stop()
        return
    yield url


def delete_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.RedisError):
        for batch in _batches(client.scan_iter(match=f"{prefix}*", count=1000), 500):
            client.delete(*batch)


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def broker(run_id: str) -> Iterator[str | None]:
    """A RabbitMQ vhost of our own, as production publishes the email task; none (in-process task) otherwise."""
    mode = os.environ.get("BENCH_BROKER", "auto")
    ctl = shutil.which("rabbitmqctl")
    usable = mode != "none" and ctl and subprocess.run([ctl, "-q", "status"], capture_output=True).returncode == 0
    if not usable:
        yield None
        return
    vhost = f"shop_bench_run_{run_id}"
    subprocess.run([ctl, "-q", "add_vhost", vhost], check=True, capture_output=True)
    try:
        subprocess.run([ctl, "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True)
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([ctl, "-q", "delete_vhost", vhost], check=False, capture_output=True)


def _wait(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - not up yet
            error = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {seconds}s (last error: {error})")


# The shop's data


def shop_env(
    pg: Postgres, redis_url: str, prefix: str, broker_url: str | None, secrets_: dict[str, str]
) -> dict[str, str]:
    """The production config: generated secrets, every extension on, rate limits far above the load."""
    env = {
        **secrets_,
        "APP_ENV": "production",
        "DATABASE_URL": pg.url,
        "REDIS_URL": redis_url,
        "CACHE_KEY_PREFIX": prefix,
        "RATELIMIT_ENABLED": "true",
        "RATELIMIT_ANON": RAISED_LIMIT,
        "RATELIMIT_USER": RAISED_LIMIT,
        "TRUSTED_PROXIES": "1",
        "LOG_LEVEL": "INFO",
    }
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    return env


def prepare_database(pg: Postgres, env: dict[str, str], work: Path) -> None:
    flask = [str(VENV_BIN / "flask"), "--app", "wsgi"]
    full_env = {**os.environ, **env, "PROMETHEUS_MULTIPROC_DIR": str(work / "cli-metrics"), "LOG_LEVEL": "WARNING"}
    for command in (["db", "upgrade"], ["seed", "--categories", str(CATEGORIES), "--products", str(PRODUCTS)]):
        result = subprocess.run([*flask, *command], cwd=ROOT, env=full_env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"bench: flask {' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    # No order may be refused for stock: the benchmark measures orders, not conflicts; except on the
    # flash sale's product, which no other scenario orders.
    pg.sql("UPDATE products SET stock = 1000000")
    pg.sql(f"UPDATE products SET stock = {flash_sale.HOT_STOCK}, hidden = false WHERE id = {HOT}")  # noqa: S608
    pg.sql("VACUUM ANALYZE")


def make_buyers(pg: Postgres, jwt_secret: str, count: int) -> list[tuple[int, str]]:
    """Buyers with access tokens valid for the whole run, signed with the servers' JWT secret."""
    from flask_jwt_extended import create_access_token

    from shop import create_app
    from shop.extensions import db
    from shop.users.models import User

    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": pg.url.replace("postgresql://", "postgresql+psycopg2://"),
            "SQLALCHEMY_ENGINE_OPTIONS": {},
            "JWT_SECRET_KEY": jwt_secret,
            "REDIS_URL": None,
            "CACHE_TYPE": "SimpleCache",
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        }
    )
    buyers = []
    with app.app_context():
        for n in range(count):
            user = User(username=f"buyer{n}", email=f"buyer{n}@example.com")
            user.set_password(secrets.token_urlsafe(12))
            db.session.add(user)
            db.session.commit()
            buyers.append((user.id, create_access_token(identity=user.id, expires_delta=timedelta(hours=3))))
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()
    return buyers


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


# Measuring

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> dict[str, float]:
    def number(pattern: str, default: float = 0.0) -> float:
        match = re.search(pattern, output, re.MULTILINE)
        return float(match.group(1)) if match else default

    percentiles = {
        int(p): float(v) * UNITS[unit]
        for p, v, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    }
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = sum(int(n) for n in socket.groups()) if socket else 0
    return {
        "rps": number(r"^Requests/sec:\s+([\d.]+)"),
        "requests": number(r"^\s+(\d+) requests in"),
        "p50_ms": percentiles.get(50, 0.0),
        "p99_ms": percentiles.get(99, 0.0),
        "non_2xx": number(r"Non-2xx or 3xx responses: (\d+)"),
        "socket_errors": socket_errors,
    }


@dataclass
class Scenario:
    name: str
    where: str
    url: str
    script: str | None = None
    headers: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    ceiling: str | None = None
    target: float | None = None
    note: str = ""
    pgbench: bool = False
    serving: tuple[int, ...] = ()  # master processes whose workers serve it: their CPU time is counted
    cpu_limit_ms: float | None = None  # the most worker CPU a request may cost (a target too)


def run_wrk(
    tools: dict[str, str],
    scenario: Scenario,
    seconds: float,
    connections: int = 32,
    threads: int = 2,
    timeout: str = "5s",
) -> tuple[dict[str, float], str]:
    args = [tools["wrk"], f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    args.append(f"--timeout={timeout}")
    if scenario.script:
        args += ["-s", str(BENCH / scenario.script)]
    for header in scenario.headers:
        args += ["-H", header]
    result = subprocess.run(
        [*args, scenario.url],
        env={**os.environ, **scenario.env},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 or "Requests/sec" not in output:
        raise RuntimeError(f"wrk failed on {scenario.url}:\n{output}")
    return parse_wrk(output), output


def run_pgbench(
    tools: dict[str, str], pg: Postgres, user_id: int, seconds: float, work: Path, products: int = SPREAD
) -> dict[str, float]:
    """The order's SQL with 16 clients on products 1..`products` (2: every transaction on the same rows,
    the flash sale's ceiling), the transaction latencies read from pgbench's per-transaction log."""
    logs = Path(tempfile.mkdtemp(prefix="pgbench-", dir=work))
    args = [tools["pgbench"], *pg.args(), "-n", "-c", "16", "-j", "2", "-T", str(max(1, round(seconds)))]
    args += ["-f", str(BENCH / "order_transaction.sql"), "-D", f"user_id={user_id}", "-D", f"products={products}"]
    args += ["-l", f"--log-prefix={logs / 'tx'}", pg.name]
    result = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120, check=False)
    output = result.stdout + result.stderr
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    if result.returncode != 0 or not tps:
        raise RuntimeError(f"pgbench failed:\n{output}")
    latencies = sorted(
        int(line.split()[2]) / 1000 for path in logs.iterdir() for line in path.read_text().splitlines() if line
    )
    failed = re.search(r"number of failed transactions: (\d+)", output)
    shutil.rmtree(logs, ignore_errors=True)
    return {
        "rps": float(tps.group(1)),
        "requests": float(len(latencies)),
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "non_2xx": float(failed.group(1)) if failed else 0.0,
        "socket_errors": 0.0,
    }


def _percentile(values: list[float], percent: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, round(percent / 100 * len(values)) - 1))
    return values[index]


def cpu_seconds(masters: tuple[int, ...]) -> float:
    """User and system CPU time of the workers (children) of these master processes."""
    if not masters:
        return 0.0
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) in masters:  # ppid
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(
    scenario: Scenario, tools: dict[str, str], pg: Postgres, buyer_id: int, seconds: float, work: Path
) -> Measure:
    load = load_average()
    cpu_before = cpu_seconds(scenario.serving)
    if scenario.pgbench:
        figures = run_pgbench(tools, pg, buyer_id, seconds, work)
    else:
        figures, _ = run_wrk(tools, scenario, seconds)
    cpu = cpu_seconds(scenario.serving) - cpu_before
    result = Measure(
        name=scenario.name,
        where=scenario.where,
        url=scenario.url,
        rps=figures["rps"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        requests=int(figures["requests"]),
        errors=int(figures["non_2xx"] + figures["socket_errors"]),
        load=load,
        ceiling=scenario.ceiling,
        target=scenario.target,
        note=scenario.note,
        cpu_ms=cpu * 1000 / figures["requests"] if scenario.serving and figures["requests"] else None,
        cpu_limit_ms=scenario.cpu_limit_ms,
    )
    log(
        f"{scenario.name:<44} {result.rps:>9,.0f}/s  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:7.1f} ms"
        f"  errors {result.errors}  cpu {result.cpu_ms or 0:.2f} ms/req  (load {load:.1f})"
    )
    return result


def scenario_groups(stack: Stack, token: str) -> list[list[Scenario]]:
    """Each group: a ceiling, then the scenarios measured against it, run back to back."""
    bearer = f"Authorization: Bearer {token}"
    past = "Cache-Control: no-cache"  # past Nginx's micro-cache (a token no longer is: the catalog ignores it)
    cached, psycopg, static, pgbench = (
        "bare Flask, bytes from Redis",
        "bare Flask + psycopg2",
        "Nginx static file",
        "pgbench, the order's SQL",
    )
    pages = {"PAGES": str(PAGES)}
    details = {"IDS": str(DETAIL_IDS)}
    orders = {"TOKEN": token, "PRODUCTS": str(SPREAD)}
    pid = stack.pids
    warm, cold, ceiling = (pid.get("warm", 0),), (pid.get("cold", 0),), (pid.get("ceiling", 0),)
    unlimited = (pid.get("unlimited", 0),)
    nginx_warm, nginx_cold = (pid.get("nginx_warm", 0),), (pid.get("nginx_cold", 0),)
    direct, proxied, edge = "gunicorn", "nginx → gunicorn", "nginx"
    return [
        [
            Scenario(cached, "ceiling", f"{stack.ceiling}/cached/", serving=ceiling),
            Scenario("warm list page, direct", direct, f"{stack.warm}/api/products/", ceiling=cached, target=0.75,
                     note="every extension on", serving=warm),
            Scenario("warm list page, direct, rate limits off", direct, f"{stack.unlimited}/api/products/",
                     ceiling=cached, note="to measure the limiter's cost", serving=unlimited),
            Scenario("product detail (cached), direct", direct, stack.warm, script="detail.lua", env=details,
                     ceiling=cached, target=0.75, serving=warm),
            Scenario("warm list page, Nginx, past the micro-cache", proxied, f"{stack.nginx_warm}/api/products/",
                     headers=(bearer, past), ceiling=cached, serving=nginx_warm + warm),
        ],
        [
            Scenario(psycopg, "ceiling", f"{stack.ceiling}/db/", script="pages.lua", env=pages, serving=ceiling),
            Scenario("cold list page, direct (cache off)", direct, f"{stack.cold}/api/products/", script="pages.lua",
                     env=pages, ceiling=psycopg, target=0.70, serving=cold),
            Scenario("cold list page, Nginx, past the micro-cache (cache off)", proxied,
                     f"{stack.nginx_cold}/api/products/", script="pages.lua", env=pages, headers=(bearer, past),
                     ceiling=psycopg, serving=nginx_cold + cold),
        ],
        [
            Scenario(static, "ceiling", f"{stack.nginx_warm}/bench/static-page.json", serving=nginx_warm),
            Scenario("anonymous list page, Nginx micro-cache", edge, f"{stack.nginx_warm}/api/products/",
                     ceiling=static, target=0.80, serving=nginx_warm + warm),
            Scenario("anonymous product detail, Nginx micro-cache", edge, stack.nginx_warm, script="detail.lua",
                     env=details, ceiling=static, target=0.80, serving=nginx_warm + warm),
        ],
        [
            Scenario(pgbench, "ceiling", "pgbench -c 16", pgbench=True),
            Scenario("order creation, direct", direct, stack.warm, script="orders.lua", env=orders, ceiling=pgbench,
                     target=0.40, cpu_limit_ms=4.0, note="aim: 50%", serving=warm),
            Scenario("order creation, Nginx", proxied, stack.nginx_warm, script="orders.lua", env=orders,
                     ceiling=pgbench, serving=nginx_warm + warm),
        ],
    ]  # fmt: skip


# The flash sale


def run_sale(
    stack: Stack,
    tools: dict[str, str],
    pg: Postgres,
    buyers: list[tuple[int, str]],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """bench/flash_sale.py's two runs (spread, then hot) and the single-row pgbench ceiling, all three
    beside the same ordinary shoppers; the hot product's sales counted in the database."""
    tokens = [token for _, token in buyers]
    beside_connections, think_ms = 200, 1000
    command = [tools["wrk"], "-t2", f"-c{beside_connections}", "-d600s", "--latency", "--timeout=30s"]
    command += ["-s", str(BENCH / "mix.lua"), stack.nginx_warm]
    env = {
        **os.environ,
        "TOKENS": ",".join(tokens[:20]),
        "PRODUCTS": str(SPREAD),
        "CATEGORIES": str(CATEGORIES),
        "THINK_MS": str(think_ms),
        "RAMP_MS": str(think_ms),
        "CONNECTIONS": str(beside_connections),
        "THREADS": "2",
    }
    load = load_average()
    log(
        f"flash sale: {flash_sale.BUYERS} buyers, {flash_sale.ATTEMPTS:,} attempts, beside "
        f"{beside_connections} ordinary shoppers (load {load:.1f})"
    )
    beside = flash_sale.Beside(command, env)
    try:
        time.sleep(think_ms / 1000 + 0.5)  # every ordinary shopper arrived
        spread = flash_sale.sale(stack.nginx_warm, tokens, flash_sale.spread_over(1, SPREAD), f"spread-{os.getpid()}")
        log(f"  spread over {SPREAD:,} products: {spread.summary()}")
        hot = flash_sale.sale(stack.nginx_warm, tokens, lambda _: HOT, f"hot-{os.getpid()}")
        log(f"  one product, {flash_sale.HOT_STOCK} units: {hot.summary()}")
        # The order's SQL as it is (two lines) on products 1 and 2 only: every transaction queues for the
        # same rows, as every order of the sale does for its one.
        one_row = run_pgbench(tools, pg, buyers[0][0], max(args.seconds, 3), work, products=2)
        log(f"  pgbench on one row: {one_row['rps']:,.0f}/s")
    finally:
        output = beside.stop()
    ordinary = parse_wrk(output)
    sold_sql = "SELECT coalesce(sum(order_items.quantity), 0) FROM order_items JOIN orders ON orders.id = "
    sold_sql += f"order_items.order_id WHERE order_items.product_id = {HOT} AND orders.status <> 'cancelled'"
    sold = int(pg.sql(sold_sql))
    stock_left = int(pg.sql(f"SELECT stock FROM products WHERE id = {HOT}"))  # noqa: S608
    result = {
        "buyers": flash_sale.BUYERS,
        "attempts": flash_sale.ATTEMPTS,
        "hot_stock": flash_sale.HOT_STOCK,
        "spread_products": SPREAD,
        "load": load,
        "spread": spread.summary(),
        "hot": hot.summary(),
        "sold_db": sold,
        "stock_left": stock_left,
        "hot_orders_per_second": hot.orders_per_second(sold=flash_sale.HOT_STOCK),
        "spread_orders_per_second": spread.orders_per_second(),
        "pgbench_one_row": one_row,
        "beside": {
            "connections": beside_connections,
            "offered_rps": round(beside_connections * 1000 / think_ms),
            "rps": ordinary["rps"],
            "requests": int(ordinary["requests"]),
            "p99_ms": ordinary["p99_ms"],
            "failed": int(ordinary["non_2xx"] + ordinary["socket_errors"]),
        },
    }
    log(
        f"flash sale: sold {sold} (stock left {stock_left}); hot {result['hot_orders_per_second']:,.0f} orders/s, "
        f"spread {result['spread_orders_per_second']:,.0f}/s, one row (pgbench) {one_row['rps']:,.0f}/s"
    )
    return result


# 10,000 connections


def app_cache_counts(base_url: str) -> dict[str, float]:
    """The shop's catalog cache lookups so far, from its Prometheus counters (every kind summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = {"hit": 0.0, "miss": 0.0}
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "shop_cache_requests_total" and sample.labels.get("result") in counts:
                counts[sample.labels["result"]] += sample.value
    return counts


def worker_memory(master: int) -> list[dict[str, float]]:
    """Resident memory now and at its peak (MB) of each worker of a gunicorn master."""
    result = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["PPid"]) == master:
                result.append(
                    {
                        "pid": int(fields["Pid"]),
                        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
                        "peak_mb": int(fields["VmHWM"].split()[0]) / 1024,
                    }
                )
    return sorted(result, key=lambda worker: worker["pid"])


def access_lines(path: Path, offset: int) -> list[dict[str, Any]]:
    lines = []
    with path.open("rb") as file:
        file.seek(offset)
        for raw in file:
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
    return lines


def _route_of(line: dict[str, Any]) -> str:
    """What a request of bench/mix.lua asked for, from its Nginx access line."""
    uri = str(line.get("uri", ""))
    if line.get("method") == "POST":
        return "place an order"
    if uri.startswith("/api/categories/"):
        return "categories"
    if "search=" in uri:
        return "search"
    if "category=" in uri:
        return "category, ordered"
    if "min_price=" in uri:
        return "price range"
    if re.match(r"^/api/products/\d+/", uri):
        return "product page"
    return "list page"


def run_mix(
    stack: Stack, tools: dict[str, str], buyers: list[tuple[int, str]], args: argparse.Namespace
) -> dict[str, Any]:
    connections = args.mix_connections
    # Idle longer than Nginx's keep-alive timeout (65 s) and a shopper would be disconnected: cap it.
    think_ms = min(round(connections * 1000 / args.mix_rate), 40_000)
    access_log = stack.nginx_warm_prefix / "access.log"  # type: ignore[operator]
    offset = access_log.stat().st_size if access_log.exists() else 0
    scenario = Scenario(
        f"{connections:,} shoppers, 90% reads / 10% orders",
        "nginx",
        stack.nginx_warm,
        script="mix.lua",
        env={
            "TOKENS": ",".join(token for _, token in buyers),
            "PRODUCTS": str(SPREAD),
            "CATEGORIES": str(CATEGORIES),
            "THINK_MS": str(think_ms),
            "RAMP_MS": str(think_ms),
            "CONNECTIONS": str(connections),
            "THREADS": "2",
        },
    )
    log(
        f"{scenario.name}: {args.mix_seconds:.0f} s, think time {think_ms / 2000:.1f} to {think_ms * 1.5 / 1000:.1f} s "
        f"(offered ≈ {args.mix_rate}/s)"
    )
    load = load_average()
    cache_before = app_cache_counts(stack.warm)
    figures, output = run_wrk(tools, scenario, args.mix_seconds, connections=connections, timeout="30s")
    time.sleep(1)
    cache_after = app_cache_counts(stack.warm)
    app_cache = {result: cache_after[result] - cache_before[result] for result in cache_after}
    lookups = app_cache["hit"] + app_cache["miss"]
    lines = access_lines(access_log, offset)
    memory = worker_memory(stack.warm_server.pid)  # type: ignore[union-attr]
    kinds: dict[str, list[float]] = {"read": [], "order": []}
    statuses: Counter[str] = Counter()
    cache: Counter[str] = Counter()
    routes: dict[str, dict[str, Any]] = {}
    for line in lines:
        kind = "order" if line.get("method") == "POST" else "read"
        kinds[kind].append(float(line.get("duration") or 0) * 1000)
        statuses[f"{kind} {line.get('status')}"] += 1
        if kind == "read":
            cache[line.get("cache") or "-"] += 1
        route = routes.setdefault(_route_of(line), {"count": 0, "app": [], "failed": 0})
        route["count"] += 1
        route["failed"] += int(line.get("status", 0)) >= 400
        upstream = str(line.get("upstream_duration") or "")
        if upstream and upstream != "-":  # answered by the app, not by the micro-cache
            route["app"].append(sum(float(part) for part in re.split(r"[,:] ?", upstream) if part) * 1000)
    result = {
        "name": scenario.name,
        "connections": connections,
        "seconds": args.mix_seconds,
        "think_ms": think_ms,
        "offered_rps": args.mix_rate,
        "rps": figures["rps"],
        "requests": int(figures["requests"]),
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        # Sold-out refusals are answers, counted apart; everything else that is not 2xx failed.
        "sold_out": sum(count for key, count in statuses.items() if key.endswith(" 409")),
        "failed": int(figures["non_2xx"] + figures["socket_errors"])
        - sum(count for key, count in statuses.items() if key.endswith(" 409")),
        "app_cache": app_cache,
        "app_cache_hit_ratio": app_cache["hit"] / lookups if lookups else None,
        "load": load,
        "statuses": dict(statuses),
        "cache": dict(cache),
        "p99_by_kind_ms": {kind: _percentile(sorted(values), 99) for kind, values in kinds.items()},
        "routes": {
            name: {
                "requests": route["count"],
                "failed": route["failed"],
                "to_app": len(route["app"]),
                "app_p50_ms": _percentile(sorted(route["app"]), 50),
                "app_p99_ms": _percentile(sorted(route["app"]), 99),
            }
            for name, route in sorted(routes.items())
        },
        "workers": memory,
        "wrk": output,
    }
    log(
        f"{scenario.name}: {result['rps']:,.0f}/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"failed {result['failed']}; worker RSS max {max((w['rss_mb'] for w in memory), default=0):.0f} MB"
    )
    return result


# Profiling


def profile(stack: Stack, tools: dict[str, str], token: str, seconds: float, out: Path) -> None:
    """py-spy on every worker of the serving gunicorn while wrk runs, the ceilings' included.

    Only samples holding the GIL count (`--gil`): Python at work, not waiting on a socket. Writes
    py-spy's collapsed stacks (for speedscope or flamegraph.pl) and prints them summed by layer.
    """
    py_spy = VENV_BIN / "py-spy"
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for group in scenario_groups(stack, token):
        for scenario in group:
            if scenario.pgbench or not scenario.url.startswith("http://"):
                continue  # the app's own workers only: direct scenarios and the ceiling app
            slug = re.sub(r"[^a-z0-9]+", "-", scenario.name.lower()).strip("-")
            raw = out / f"{slug}.txt"
            command = [str(py_spy), "record", "--pid", str(scenario.serving[0]), "--subprocesses", "--gil"]
            command += ["--rate", "250", "--format", "raw", "--duration", str(round(seconds))]
            command += ["--output", str(raw), "--nonblocking"]
            recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            figures, _ = run_wrk(tools, scenario, seconds)
            recorder.wait(timeout=seconds + 60)
            summary = f"{scenario.name} ({figures['rps']:,.0f}/s under py-spy), {raw.relative_to(ROOT)}:\n"
            summary += summarize_profile(raw)
            summaries.append(summary)
            print(summary, flush=True)
    (out / "summary.txt").write_text("\n\n".join(summaries) + "\n")


# Where a sampled frame's time goes, by the package (or shop module) of the innermost frame that is not
# the standard library: the profile summed by library, which is what the report states.
LAYERS = [
    ("ratelimit", "rate limit (flask-limiter, limits, shop.core.ratelimit)"),
    ("flask_limiter", "rate limit (flask-limiter, limits, shop.core.ratelimit)"),
    ("limits", "rate limit (flask-limiter, limits, shop.core.ratelimit)"),
    ("sqlalchemy", "SQL (SQLAlchemy, psycopg2)"),
    ("psycopg2", "SQL (SQLAlchemy, psycopg2)"),
    ("flask_sqlalchemy", "SQL (SQLAlchemy, psycopg2)"),
    ("redis", "Redis client (redis-py)"),
    ("cachelib", "Redis client (redis-py)"),
    ("celery", "task publishing (Celery, kombu, amqp)"),
    ("kombu", "task publishing (Celery, kombu, amqp)"),
    ("amqp", "task publishing (Celery, kombu, amqp)"),
    ("jwt", "tokens (PyJWT, flask-jwt-extended)"),
    ("flask_jwt_extended", "tokens (PyJWT, flask-jwt-extended)"),
    ("marshmallow", "schemas (marshmallow, webargs, flask-smorest)"),
    ("webargs", "schemas (marshmallow, webargs, flask-smorest)"),
    ("flask_smorest", "schemas (marshmallow, webargs, flask-smorest)"),
    ("prometheus_client", "metrics (prometheus)"),
    ("prometheus_flask_exporter", "metrics (prometheus)"),
    ("logging", "access log (logging, shop.core.logging)"),
    ("flask_cors", "headers (CORS, shop.core.security)"),
    ("security", "headers (CORS, shop.core.security)"),
    ("flask", "Flask, Werkzeug"),
    ("werkzeug", "Flask, Werkzeug"),
    ("blinker", "Flask, Werkzeug"),
    ("gunicorn", "gunicorn (accept, parse, write, close)"),
]


def _layer(frame: str) -> str | None:
    """The layer of one frame, from its file: `name (package/module.py:line)`."""
    path = frame.rsplit(" (", 1)[-1].rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    if parts[0] == "shop":
        module = parts[-1].removesuffix(".py")
        for name, layer in LAYERS:
            if name == module:
                return layer
        return "the shop's own code"
    for name, layer in LAYERS:
        if parts[0] == name:
            return layer
    return None  # the standard library, or an unlisted package: counted with its caller


def summarize_profile(raw: Path) -> str:
    """py-spy's collapsed stacks summed by layer: each sample goes to its innermost non-stdlib frame's layer."""
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if not frame.startswith(("process ", "thread "))]
        samples = int(count)
        total += samples
        layer = next((found for frame in reversed(frames) if (found := _layer(frame))), "other")
        layers[layer] += samples
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples of the workers, by layer (innermost non-stdlib frame):"]
    lines += [f"  {samples / total:6.1%}  {layer}" for layer, samples in layers.most_common()]
    return "\n".join(lines)


def serve(stack: Stack, buyers: list[tuple[int, str]], seconds: float) -> None:
    """Keep the stack up for manual runs (wrk, py-spy) and print how to reach it."""
    info: dict[str, Any] = {key: value for key, value in vars(stack).items() if isinstance(value, str)}
    info["masters"] = [server.pid for server in stack.servers if server.name.startswith(("gunicorn", "ceiling"))]
    info["token"] = buyers[0][1]
    print(json.dumps(info, indent=2), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(seconds)


# Report


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {system}, Python {platform.python_version()}"


def mix_section(mix: dict[str, Any] | None) -> str:
    if not mix:
        return "The many-connections run was skipped (`--mix-seconds 0`)."
    checks = mix_checks(mix)
    lines = [
        f"{mix['connections']:,} connections through Nginx (TLS) for {mix['seconds']:.0f} s, bench/mix.lua: each "
        f"connection a shopper waiting {mix['think_ms'] / 2000:.1f} to {mix['think_ms'] * 1.5 / 1000:.1f} s between "
        f"requests (offered ≈ {mix['offered_rps']:,}/s); 1-minute load average at the start {mix['load']:.1f}.",
        "",
        "| figure | measured | target | |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {name} | {value} | {target} | {verdict(ok)} |" for name, value, target, ok in checks]
    statuses = ", ".join(f"{key}: {value:,}" for key, value in sorted(mix["statuses"].items()))
    cache = ", ".join(f"{key}: {value:,}" for key, value in sorted(mix["cache"].items()))
    p99 = mix["p99_by_kind_ms"]
    lines += [
        "",
        f"From Nginx's access log: {statuses}. Micro-cache on reads: {cache}. p99 by kind (Nginx's request "
        f"time): reads {p99.get('read', 0):.0f} ms, orders {p99.get('order', 0):.0f} ms.",
        "",
        "| request | count | failed | answered by the app | app p50 ms | app p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {route['requests']:,} | {route['failed']:,} | {route['to_app']:,} "
            f"| {route['app_p50_ms']:.0f} | {route['app_p99_ms']:.0f} |"
            for name, route in mix.get("routes", {}).items()
        ),
        "",
        "Worker memory after the run (RSS / peak, MB): "
        + ", ".join(f"{w['rss_mb']:.0f} / {w['peak_mb']:.0f}" for w in mix["workers"])
        + ".",
    ]
    return "\n".join(lines)


def write_report(
    measures: list[Measure],
    mix: dict[str, Any] | None,
    sale: dict[str, Any] | None,
    args: argparse.Namespace,
    context: dict[str, Any],
) -> None:
    rows = rows_of(measures)
    print()
    print(terminal_table(rows))
    print()
    print(sale_section(sale))
    if mix:
        print()
        print(mix_section(mix))
    print()
    print(done_when_section(rows, mix, sale))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    chart_path = ROOT / "docs" / "performance.png"
    chart_path.parent.mkdir(exist_ok=True)
    chart(rows, chart_path, f"shop vs its ceilings, {stamp}, {context['machine'].split(' (')[0]}")
    generated = "\n".join(
        [
            f"Last run: {stamp}, `{context['command']}` — {context['machine']}; gunicorn "
            f"{workers()} sync workers per instance; wrk -t2 -c32, {args.seconds:g} s a round, "
            f"{args.rounds} round(s) interleaved with the ceilings (req/s and p50 averaged, p99 the worst round); "
            f"email task {context['broker']}. Load average (1 min) at the start {context['load_start']:.1f}, "
            f"at the end {load_average():.1f}: other work on the machine shares the cores, so compare ratios.",
            "",
            markdown_table(rows),
            "",
            "![each scenario as a share of its ceiling](performance.png)",
            "",
            f"Nginx keeps a catalog page {MICRO_CACHE_SECONDS} s; the micro-cache scenarios start after their "
            "pages' copies have expired, so each run includes refreshing them.",
            "",
            "### Flash sale: one hot product",
            "",
            sale_section(sale),
            "",
            "### 10,000 connections",
            "",
            mix_section(mix),
            "",
            "### The issue's targets, this run",
            "",
            done_when_section(rows, mix, sale),
        ]
    )
    write_markdown(ROOT / "docs" / "performance.md", generated)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    payload = {"context": context, "measures": [asdict(m) for m in measures], "mix": mix, "sale": sale}
    (results / "latest.json").write_text(json.dumps(payload, indent=2, default=str))
    log("wrote docs/performance.md, docs/performance.png and bench/results/latest.json")


# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(env("BENCH_SECONDS", "5")), help="a wrk run")
    parser.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "2")), help="rounds per scenario")
    parser.add_argument("--mix-seconds", type=float, default=float(env("BENCH_MIX_SECONDS", "60")))
    parser.add_argument("--mix-connections", type=int, default=int(env("BENCH_MIX_CONNECTIONS", "10000")))
    parser.add_argument("--mix-rate", type=int, default=int(env("BENCH_MIX_RATE", "1600")), help="offered req/s")
    parser.add_argument("--no-sale", action="store_true", help="leave out the flash sale")
    parser.add_argument("--only", help="run only the scenario groups whose ceiling name contains this")
    parser.add_argument("--profile", action="store_true", help="py-spy the direct scenarios instead of measuring")
    parser.add_argument("--serve", type=float, default=0, help="start the stack, print it, keep it up N seconds")
    parser.add_argument("--no-report", action="store_true", help="print the table, leave docs/ alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tools = ensure_tools()
    open_files = raise_open_files()
    if args.mix_seconds and open_files < args.mix_connections + 1000:
        sys.exit(f"bench: only {open_files} open files allowed; {args.mix_connections} connections need more")
    context: dict[str, Any] = {
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]).strip(),
        "machine": machine(),
        "load_start": load_average(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    log(f"{context['machine']}; load average {context['load_start']:.1f}")
    run_id = str(os.getpid())
    prefix = f"bench{run_id}:"
    pg = Postgres()
    work = Path(tempfile.mkdtemp(prefix="shop-bench-"))
    work.chmod(0o755)
    stack = Stack()
    started = time.monotonic()
    try:
        with redis_db(work) as redis_url, broker(run_id) as broker_url:
            context["broker"] = "published to RabbitMQ" if broker_url else "run in-process (no RabbitMQ)"
            secrets_ = {"SECRET_KEY": secrets.token_urlsafe(32), "JWT_SECRET_KEY": secrets.token_urlsafe(32)}
            env = shop_env(pg, redis_url, prefix, broker_url, secrets_)
            log(f"database {pg.name}: migrate, seed {PRODUCTS:,} products in {CATEGORIES} categories")
            pg.create()
            prepare_database(pg, env, work)
            buyers = make_buyers(pg, secrets_["JWT_SECRET_KEY"], BUYERS)
            try:
                start_stack(stack, env, redis_url, pg, work, f"{prefix}bench:page", tools)
                prime_caches(stack)
                token = buyers[0][1]
                if args.serve:
                    serve(stack, buyers, args.serve)
                    return 0
                if args.profile:
                    profile(stack, tools, token, args.seconds, ROOT / "reports" / "profile")
                    return 0
                measures = run_groups(stack, tools, pg, buyers, args, work)
                sale = None if args.no_sale else run_sale(stack, tools, pg, buyers, args, work)
                mix = run_mix(stack, tools, buyers, args) if args.mix_seconds > 0 else None
                if not args.no_report:
                    write_report(measures, mix, sale, args, context)
                else:
                    print(terminal_table(rows_of(measures)))
                    print(sale_section(sale))
                    if mix:
                        print(mix_section(mix))
                        print(mix["wrk"])
            finally:
                for server in reversed(stack.servers):
                    server.stop()
                delete_keys(redis_url, prefix)
    finally:
        pg.drop()
        shutil.rmtree(work, ignore_errors=True)
        log(f"stopped everything it started ({time.monotonic() - started:.0f} s in all)")
    return 0


def run_groups(
    stack: Stack,
    tools: dict[str, str],
    pg: Postgres,
    buyers: list[tuple[int, str]],
    args: argparse.Namespace,
    work: Path,
) -> list[Measure]:
    measures: list[Measure] = []
    buyer_id, token = buyers[0]
    for group in scenario_groups(stack, token):
        if args.only and args.only.lower() not in group[0].name.lower():
            continue
        for scenario in group:  # a short unrecorded run first: workers, pools and caches warm
            if not scenario.pgbench:
                run_wrk(tools, scenario, 1)
        for _ in range(args.rounds):
            measures.extend(measure(scenario, tools, pg, buyer_id, args.seconds, work) for scenario in group)
    return measures


if __name__ == "__main__":
    sys.exit(main())
