"""Fixtures chained app → db → users → clients; real services when their URLs are set."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import text

from shop import create_app
from shop.config import normalize_database_url
from shop.extensions import db
from tests.factories import make_user
from tests.redis_server import private_redis  # noqa: F401 - a fixture for every test module

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
PASSWORD = "correct-horse-battery"


def need_service(name: str, value: str | None) -> str:
    """The service URL, or skip (fail when REQUIRE_SERVICES=1) when it is not configured."""
    if value:
        return value
    message = f"{name} is not set: this test needs the real service"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and REQUIRE_SERVICES=1")
    pytest.skip(message)


def app_config(**overrides: Any) -> dict[str, Any]:
    """The app config of the test run: its own database, cheap password hashes, limits off."""
    config: dict[str, Any] = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": normalize_database_url(os.environ.get("TEST_DATABASE_URL") or _sqlite_url()),
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "RATELIMIT_ENABLED": False,
        # Tasks run in-process here; the worker tests start a real worker on CELERY_BROKER_URL.
        "CELERY": {"broker_url": None, "task_always_eager": True},
    }
    if config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # The concurrency tests run up to 200 requests at once in threads of this process.
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 20, "max_overflow": 30, "pool_timeout": 60}
    config.update(overrides)
    return config


_SQLITE_DIR = tempfile.mkdtemp(prefix="shop-tests-")


def _sqlite_url() -> str:
    return f"sqlite:///{Path(_SQLITE_DIR) / 'shop.sqlite3'}"


def is_postgres(app: Flask) -> bool:
    return app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    app = create_app(app_config())
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        upgrade()
    yield app


@pytest.fixture(autouse=True)
def _clean_tables(app: Flask) -> Iterator[None]:
    """Every test starts from empty tables and an empty cache."""
    yield
    with app.app_context():
        db.session.remove()
        tables = [table.name for table in reversed(db.metadata.sorted_tables)]
        with db.engine.begin() as connection:
            if is_postgres(app):
                connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                for name in tables:
                    connection.execute(text(f"DELETE FROM {name}"))
        from shop.extensions import cache

        cache.clear()


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield
        db.session.remove()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def user(app: Flask) -> Any:
    with app.app_context():
        return make_user(username="alice", email="alice@example.com", password=PASSWORD)


@pytest.fixture
def staff(app: Flask) -> Any:
    with app.app_context():
        return make_user(username="boss", email="boss@example.com", password=PASSWORD, is_staff=True)


@pytest.fixture
def admin(app: Flask) -> Any:
    with app.app_context():
        return make_user(username="root", email="root@example.com", password=PASSWORD, is_staff=True, is_admin=True)


def token_for(client: FlaskClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api/token/", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user_headers(client: FlaskClient, user: Any) -> dict[str, str]:
    return bearer(token_for(client, "alice")["access"])


@pytest.fixture
def staff_headers(client: FlaskClient, staff: Any) -> dict[str, str]:
    return bearer(token_for(client, "boss")["access"])


@pytest.fixture
def admin_headers(client: FlaskClient, admin: Any) -> dict[str, str]:
    return bearer(token_for(client, "root")["access"])
