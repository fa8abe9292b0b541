"""`make backup` and `make restore`: pg_dump -Fc of a serving shop, restored into a fresh database."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.ops_processes import ROOT, free_port, need_binary, running, start_gunicorn
from tests.reliability.invariants import check_orders
from tests.reliability.load import Load
from tests.reliability.stack import (
    PREFIX,
    app_env,
    database_url,
    drop_database,
    fresh_database,
    query,
    register_buyers,
    seed_catalog,
)

pytestmark = pytest.mark.services


def make(target: str, url: str, **variables: str) -> subprocess.CompletedProcess[str]:
    need_binary("make")
    need_binary("pg_dump")
    need_binary("pg_restore")
    args = ["make", "-s", target, *(f"{name}={value}" for name, value in variables.items())]
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


@contextmanager
def restored_name() -> Iterator[str]:
    name = f"{PREFIX}restored_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        yield name
    finally:
        drop_database(name)


def tables(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of the shop, in a stable order."""
    names = [
        name for (name,) in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    ]
    return {name: query(url, f'SELECT * FROM "{name}" ORDER BY 1') for name in names}


def test_backup_of_a_serving_shop_restores_every_order_item_and_user(template: str, tmp_path: Path) -> None:
    with fresh_database(template, "backup") as url:
        products = seed_catalog(url)
        port = free_port()
        server = start_gunicorn(port, 2, app_env(url, tmp_path), tmp_path / "gunicorn.log")
        with running(server):
            base = f"http://127.0.0.1:{port}"
            load = Load(base, register_buyers(base, 3), list(products), readers=1)
            with load:
                load.run_for(3)
                seen_before = {order.order_id for order in load.orders if order.final == "created"}
                # Online: the dump is taken while orders keep coming.
                online = make("backup", url, BACKUP=str(tmp_path / "online.dump"))
                load.run_for(1)
        assert online.returncode == 0, online.stderr
        check_orders(url, load, products)
        quiet = make("backup", url, BACKUP=str(tmp_path / "quiet.dump"))
        assert quiet.returncode == 0, quiet.stderr

        # The dump taken under load is one consistent moment: every order confirmed before it
        # began is there with its items, and stock adds up.
        with restored_name() as name:
            restored = make(
                "restore", url, BACKUP=str(tmp_path / "online.dump"), RESTORE_DATABASE_URL=database_url(name)
            )
            assert restored.returncode == 0, restored.stdout + restored.stderr
            target = database_url(name)
            orders = {order_id for (order_id,) in query(target, "SELECT id FROM orders")}
            assert seen_before and seen_before <= orders
            assert orders <= {order_id for (order_id,) in query(url, "SELECT id FROM orders")}
            stock = dict(query(target, "SELECT id, stock FROM products"))
            ordered = dict(query(target, "SELECT product_id, SUM(quantity) FROM order_items GROUP BY product_id"))
            assert all(stock[pid] + ordered.get(pid, 0) == initial for pid, initial in products.items())

        # The dump of the quiet shop restores to exactly the same rows, table by table.
        with restored_name() as name:
            restored = make(
                "restore", url, BACKUP=str(tmp_path / "quiet.dump"), RESTORE_DATABASE_URL=database_url(name)
            )
            assert restored.returncode == 0, restored.stdout + restored.stderr
            source, copy = tables(url), tables(database_url(name))
            assert {"users", "orders", "order_items", "email_outbox", "alembic_version"} <= set(copy)
            assert len(source["orders"]) == len(load.orders) > 0
            assert copy == source

            # A second restore into an existing database is refused and changes nothing.
            again = make("restore", url, BACKUP=str(tmp_path / "online.dump"), RESTORE_DATABASE_URL=database_url(name))
            assert again.returncode != 0 and "already exists" in again.stderr
            assert tables(database_url(name)) == source


def test_backup_refuses_a_database_that_is_not_postgresql(tmp_path: Path) -> None:
    result = make("backup", f"sqlite:///{tmp_path / 'shop.sqlite3'}", BACKUP=str(tmp_path / "x.dump"))
    assert result.returncode != 0 and "PostgreSQL only" in result.stderr
    assert not (tmp_path / "x.dump").exists()
