"""The services a run gets of its own: a PostgreSQL database (migrated, seeded), Redis keys, a RabbitMQ vhost;
the shop's environment and its buyers."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import CATEGORIES, HOT, HOT_STOCK, PRODUCTS, RAISED_LIMIT, ROOT, VENV_BIN, _wait, log
from tests.ops_processes import Server, free_port

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
        # Buyers place thousands of orders no one pays: no cap on what their unpaid orders hold.
        "MAX_PENDING_ORDERS": "0",
        "MAX_PENDING_UNITS": "0",
        "MAX_ORDERS_PER_HOUR": "0",
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
    pg.sql(f"UPDATE products SET stock = {HOT_STOCK}, hidden = false WHERE id = {HOT}")  # noqa: S608
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
            # In-process parts only, whatever the environment names (CI sets REDIS_URL for its tests).
            "REDIS_URL": None,
            "CACHE_TYPE": "SimpleCache",
            "CACHE_OPTIONS": {},
            "RATELIMIT_STORAGE_URI": "memory://",
            "RATELIMIT_STORAGE_OPTIONS": {},
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
