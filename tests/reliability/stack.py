"""What the fault tests stand up and break: databases, a Redis of their own, app instances, broker faults.

Everything here runs real services on loopback:
- PostgreSQL databases named `shop_rel_*` on the server of TEST_DATABASE_URL, made from one migrated
  template and dropped afterwards;
- a `redis-server` of the tests' own on a free port, so stopping it leaves the shared Redis alone;
- gunicorn instances (tests.ops_processes) configured with those;
- the shared PostgreSQL and RabbitMQ stopped and started again, always brought back in `finally`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import pytest
import requests

from tests.conftest import PASSWORD, need_service
from tests.ops_processes import ROOT, VENV_BIN, Server, free_port, gunicorn_env, need_binary, wait_until

PREFIX = "shop_rel_"
VHOST = "shop_rel"
REPORT = ROOT / "reports" / "reliability.jsonl"


# ---- PostgreSQL -------------------------------------------------------------------------------


def server_url() -> str:
    """postgresql://… of the server the tests use (TEST_DATABASE_URL), without a database name."""
    url = need_service("TEST_DATABASE_URL (PostgreSQL)", os.environ.get("TEST_DATABASE_URL"))
    if not url.startswith(("postgresql", "postgres:")):
        need_service("TEST_DATABASE_URL pointing at PostgreSQL", None)
    parts = urllib.parse.urlsplit(url.replace("postgresql+psycopg2://", "postgresql://"))
    return urllib.parse.urlunsplit(("postgresql", parts.netloc, "", "", ""))


def database_url(name: str) -> str:
    return f"{server_url()}/{name}"


def admin(sql: str) -> None:
    connection = psycopg2.connect(database_url("postgres"), connect_timeout=5)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def drop_database(name: str) -> None:
    assert name.startswith(PREFIX)
    wait_until(lambda: _try_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'), timeout=30, what=f"drop {name}")


def _try_admin(sql: str) -> bool:
    try:
        admin(sql)
    except psycopg2.OperationalError:
        return False  # the server is restarting
    return True


def migrate(url: str) -> None:
    """`flask db upgrade` on `url`, as an operator would run it."""
    env = gunicorn_env(url, Path("unused"))
    env.pop("PROMETHEUS_MULTIPROC_DIR")  # one short process: no metrics files
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@contextmanager
def fresh_database(template: str, label: str) -> Iterator[str]:
    """A new database copied from the migrated `template`; its URL. Dropped afterwards."""
    name = f"{PREFIX}{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield database_url(name)
    finally:
        drop_database(name)


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(url, connect_timeout=5)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def pg_cluster() -> tuple[str, str]:
    need_binary("pg_ctlcluster")
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1], "main"


def pg_ready() -> bool:
    host = urllib.parse.urlsplit(server_url()).hostname or "127.0.0.1"
    port = str(urllib.parse.urlsplit(server_url()).port or 5432)
    return subprocess.run(["pg_isready", "-q", "-h", host, "-p", port], check=False, timeout=10).returncode == 0


def pg_ctl(action: str) -> None:
    version, cluster = pg_cluster()
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, action]
    if action == "stop":
        command += ["--", "-m", "fast"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextmanager
def postgres_brought_back() -> Iterator[None]:
    """Whatever happens inside, the shared PostgreSQL is running and ready afterwards."""
    try:
        yield
    finally:
        if not pg_ready():
            with suppress(subprocess.CalledProcessError):
                pg_ctl("start")
        wait_until(pg_ready, timeout=60, interval=0.2, what="PostgreSQL to accept connections again")


# ---- Redis of the tests' own ------------------------------------------------------------------


class OwnRedis:
    """`redis-server` on a free loopback port, with no persistence: a restart starts it empty."""

    def __init__(self, work: Path) -> None:
        self.binary = need_binary("redis-server")
        self.port = free_port()
        self.work = work
        self.server: Server | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.work)]
        self.server = Server(f"redis:{self.port}", args, self.work / f"redis-{self.starts}.log")
        wait_until(self.ping, timeout=20, what="redis-server to answer")

    def ping(self) -> bool:
        import redis

        return bool(redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1).ping())

    def stop(self) -> None:
        if self.server is not None:
            self.server.kill(signal.SIGKILL)
            self.server = None


# ---- RabbitMQ ---------------------------------------------------------------------------------


def broker_url() -> str:
    """amqp://… of the shared broker (CELERY_BROKER_URL) on the tests' own vhost."""
    url = need_service("CELERY_BROKER_URL (RabbitMQ)", os.environ.get("CELERY_BROKER_URL"))
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{VHOST}", "", ""))


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    binary = need_binary("rabbitmqctl")
    result = subprocess.run([binary, "-q", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}")
    return result.stdout


def fresh_vhost() -> None:
    """The tests' vhost, empty: queues of an earlier run would deliver old tasks."""
    with suppress(RuntimeError):
        rabbitmqctl("delete_vhost", VHOST)
    rabbitmqctl("add_vhost", VHOST)
    rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")


@contextmanager
def rabbitmq_brought_back() -> Iterator[None]:
    """Whatever happens inside, the shared broker's application is running afterwards."""
    try:
        yield
    finally:
        with suppress(RuntimeError):
            rabbitmqctl("start_app")
        rabbitmqctl("await_startup", timeout=120)


def celery_process(kind: str, env: dict[str, str], work: Path) -> Server:
    """A `celery worker` (prefork, as deployed) or `celery beat` process of the shop, started and ready."""
    command = [sys.executable, "-m", "celery", "-A", "celery_worker", kind, "-l", "info"]
    if kind == "worker":
        command += ["--concurrency=2", "--without-gossip", "--without-mingle", "-n", f"rel{time.time_ns()}@%h"]
        ready = "ready."
    else:
        command += ["-s", str(work / "beat-schedule"), "--pidfile="]
        ready = "beat: Starting"
    server = Server(f"celery-{kind}", command, work / f"celery-{kind}.log", env=env)
    try:
        wait_until(lambda: ready in server.output(), timeout=60, what=f"celery {kind} to start")
    except BaseException:
        print(server.output()[-3000:])
        server.kill()
        raise
    return server


# ---- the app instances ------------------------------------------------------------------------


# Load and fault runs: buyers place orders no one pays, many an hour.
NO_ORDER_CAPS = {"MAX_PENDING_ORDERS": "0", "MAX_PENDING_UNITS": "0", "MAX_ORDERS_PER_HOUR": "0"}


def app_env(url: str, work: Path, **extra: str) -> dict[str, str]:
    """An app instance on database `url`: cheap password hashes, its own metrics dir, no other services."""
    return gunicorn_env(
        url,
        work / f"metrics-{uuid.uuid4().hex[:6]}",
        PASSWORD_HASH_METHOD="pbkdf2:sha256:1000",
        # A 5 s database outage must not take a worker past its timeout.
        GUNICORN_TIMEOUT="30",
        GUNICORN_GRACEFUL_TIMEOUT="20",
        # Buyers sign in again and again.
        **{"RATELIMIT_ACCOUNT": "1000000/minute", **NO_ORDER_CAPS, **extra},
    )


def workers_of(master: Server) -> list[int]:
    with suppress(psutil.NoSuchProcess):
        return sorted(child.pid for child in psutil.Process(master.pid).children())
    return []


@dataclass
class Buyer:
    user_id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Shop:
    """A seeded database: its products and their initial stock, and buyers with tokens."""

    url: str
    products: dict[int, int] = field(default_factory=dict)  # product id → initial stock
    buyers: list[Buyer] = field(default_factory=list)


def seed_catalog(url: str, products: int = 20, stock: int = 100_000) -> dict[int, int]:
    rows = query(
        url,
        """
        WITH category AS (
            INSERT INTO categories (name, description) VALUES ('Tools', 'For the reliability tests') RETURNING id
        )
        INSERT INTO products (name, description, price, stock, image, category_id, hidden, created_at, updated_at)
        SELECT 'Product ' || n, 'A thing', 9.99 + n, %s, NULL, category.id, false, now(), now()
        FROM generate_series(1, %s) AS n, category
        RETURNING id, stock
        """,
        (stock, products),
    )
    return dict(rows)


def register_buyers(base: str, count: int, verify: Any = None, prefix: str = "buyer") -> list[Buyer]:
    """Accounts made and signed in through the API, as a client would."""
    buyers = []
    for n in range(count):
        username = f"{prefix}{n}_{uuid.uuid4().hex[:6]}"
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD, "password2": PASSWORD}
        made = requests.post(f"{base}/api/users/", json=body, timeout=10, verify=verify)
        assert made.status_code == 201, made.text
        pair = requests.post(
            f"{base}/api/token/", json={"username": username, "password": PASSWORD}, timeout=10, verify=verify
        )
        assert pair.status_code == 200, pair.text
        buyers.append(Buyer(made.json()["id"], username, pair.json()["access"]))
    return buyers


# ---- the app's own log ------------------------------------------------------------------------


def server_errors_in_logs(texts: list[str], allowed: frozenset[int] = frozenset()) -> list[str]:
    """Access lines with a 5xx status not in `allowed`, and unhandled exceptions, from the app logs."""
    bad = []
    for text in texts:
        for line in text.splitlines():
            record = _json_line(line)
            if "Exception on " in line or record.get("level") == "CRITICAL":
                bad.append(line)
                continue
            if record.get("logger") != "shop.access":
                continue
            status = record.get("status")
            if isinstance(status, int) and status >= 500 and status not in allowed:
                bad.append(line)
    return bad


def _json_line(line: str) -> dict[str, Any]:
    """A JSON log line as a dict ({} for any other line: gunicorn's own, a traceback's)."""
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def access_lines(text: str) -> list[dict[str, Any]]:
    return [record for line in text.splitlines() if (record := _json_line(line)).get("logger") == "shop.access"]


_STANDARD = {"requests", "by_kind", "statuses", "client_errors", "orders", "seconds", "recovery_s"}


def report(name: str, summary: dict[str, Any]) -> None:
    """Print a one-line summary (pytest -s shows it) and append it to reports/reliability.jsonl."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a") as out:
        out.write(json.dumps({"test": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary}) + "\n")
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(summary["by_kind"].items()))
    errors = ", ".join(f"{key} x{value}" for key, value in sorted(summary["client_errors"].items())) or "none"
    rest = ", ".join(f"{key}={value}" for key, value in summary.items() if key not in _STANDARD)
    print(
        f"\nRELIABILITY {name}: {summary['requests']} requests in {summary['seconds']}s ({kinds}); "
        f"client errors: {errors}; recovery {summary['recovery_s']:.2f}s; {rest}"
    )


def skip_unless_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("stopping and starting the shared services needs root")
