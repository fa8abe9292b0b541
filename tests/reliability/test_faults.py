"""Faults under load: a worker killed, PostgreSQL restarted, Redis and RabbitMQ stopped, an instance killed.

Each test runs the steady mixed load of tests/reliability/load.py against real services, does the
fault, lets the load run on, then checks: every order the client saw answered 201 is in the
database with its items and one email owed or sent, no retry made a second order, stock is
conserved, the app logged no 500, and no request failed more than 5 s after the fault ended.
A summary line per test is printed (`pytest -s`) and appended to reports/reliability.jsonl.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import pytest
import requests

from shop.extensions import db
from tests.ops_processes import (
    Server,
    free_port,
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
    wait_until,
)
from tests.reliability.invariants import check_orders
from tests.reliability.load import Load
from tests.reliability.stack import (
    OwnRedis,
    app_env,
    broker_url,
    celery_process,
    fresh_database,
    fresh_vhost,
    pg_ctl,
    pg_ready,
    postgres_brought_back,
    query,
    rabbitmq_brought_back,
    rabbitmqctl,
    register_buyers,
    report,
    seed_catalog,
    server_errors_in_logs,
    skip_unless_root,
    workers_of,
)
from tests.smtp import MailSink, SMTPServer

pytestmark = pytest.mark.services

RECOVERY_LIMIT = 5.0  # seconds after the fault ended by which every request succeeds again


@pytest.fixture(autouse=True)
def _fresh_pool_after(app: Any) -> Any:
    """PostgreSQL may have restarted under the test session's own pool (no pre-ping, as in production): drop its
    connections, so the next test's clean-up does not spend the one failed request a restart costs."""
    yield
    with app.app_context():
        db.engine.dispose()


def _finish(
    name: str,
    load: Load,
    url: str,
    products: dict[int, int],
    logs: list[str],
    allowed_5xx: frozenset[int] = frozenset(),
    **extra: Any,
) -> dict:
    """The checks every fault test ends with, and its summary line."""
    fault_end = load.marks["fault_end"]
    summary = load.summary(fault_end)
    summary.update(check_orders(url, load, products))
    summary.update(extra)
    report(name, summary)
    assert summary["orders_created"] > 0 and summary["by_kind"].get("read", 0) > 0
    assert "500" not in summary["statuses"], "a client saw a 500"
    assert "Timeout" not in summary["statuses"] and "ReadTimeout" not in summary["statuses"], "a request hung"
    assert "503 without Retry-After" not in summary["statuses"]
    assert server_errors_in_logs(logs, allowed=allowed_5xx) == []
    assert summary["orders_gave_up"] == 0, "an order was still unanswered when its client gave up"
    assert summary["orders_refused"] == 0, "an order was refused (stock is plenty, the bodies valid)"
    assert summary["reads_failed"] == 0, "a GET still failed when its client gave up"
    assert summary["recovery_s"] <= RECOVERY_LIMIT, f"requests still failed {summary['recovery_s']}s after the fault"
    return summary


def _slow_order(base: str, url: str, buyer: Any, product: int) -> tuple[threading.Thread, dict[str, Any], Any]:
    """An order held inside its transaction: the test holds the product's row lock until it lets go.

    Returns the client thread, its result (filled when it returns) and the lock's connection.
    """
    holder = psycopg2.connect(url)
    with holder.cursor() as cursor:
        cursor.execute("SELECT id FROM products WHERE id = %s FOR UPDATE", (product,))
    result: dict[str, Any] = {"key": str(uuid.uuid4()), "lines": [{"product_id": product, "quantity": 1}]}

    def send() -> None:
        headers = {**buyer.headers, "Idempotency-Key": result["key"]}
        try:
            response = requests.post(
                f"{base}/api/orders/", json={"items": result["lines"]}, headers=headers, timeout=30
            )
        except requests.RequestException as exc:
            result["outcome"] = type(exc).__name__
        else:
            result["outcome"] = response.status_code
            result["body"] = response.json()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    wait_until(lambda: _lock_waiter(url, holder), timeout=10, what="the order to wait on the product's row lock")
    return thread, result, holder


def _lock_waiter(url: str, holder: Any) -> int | None:
    """The client port (on the app's side) of the connection blocked by `holder`'s row lock, if one is.

    Only that one: orders of the steady load wait on each other's row locks too.
    """
    rows = query(
        url,
        "SELECT client_port FROM pg_stat_activity"
        " WHERE datname = current_database() AND %s = ANY(pg_blocking_pids(pid))",
        (holder.get_backend_pid(),),
    )
    return rows[0][0] if rows else None


def _worker_holding(server: Server, database_port: int) -> int:
    """The gunicorn worker whose database connection has this local port."""
    for pid in workers_of(server):
        for connection in psutil.Process(pid).net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == database_port:
                return pid
    raise AssertionError("no worker holds the waiting connection")


# ---- gunicorn: a worker SIGKILLed, the master HUPed -------------------------------------------


def test_worker_killed_mid_order_and_master_hup_under_load(template: str, tmp_path: Path) -> None:
    with fresh_database(template, "kill") as url:
        products = seed_catalog(url)
        port = free_port()
        log = tmp_path / "gunicorn.log"
        server = start_gunicorn(port, 3, app_env(url, tmp_path), log)
        with running(server):
            base = f"http://127.0.0.1:{port}"
            buyers = register_buyers(base, 3)
            held = next(iter(products))  # the steady load leaves it alone, so only the slow order waits on it
            load = Load(base, buyers[:2], [product for product in products if product != held])
            with load:
                load.run_for(3)
                # A worker killed in the middle of an order's transaction, its client retrying the key.
                thread, slow, holder = _slow_order(base, url, buyers[2], held)
                victim = _worker_holding(server, _lock_waiter(url, holder))
                load.mark("fault_start")
                os.kill(victim, signal.SIGKILL)
                thread.join(10)
                holder.commit()
                holder.close()
                wait_until(lambda: victim not in workers_of(server) and len(workers_of(server)) == 3, what="respawn")
                load.run_for(2)
                # Then every worker replaced by a HUP, with the load running.
                old = set(workers_of(server))
                os.kill(server.pid, signal.SIGHUP)
                wait_until(
                    lambda: not set(workers_of(server)) & old and len(workers_of(server)) == 3,
                    timeout=40,
                    what="the HUP to replace every worker",
                )
                load.mark("fault_end")
                retry = requests.post(
                    f"{base}/api/orders/",
                    json={"items": slow["lines"]},
                    headers={**buyers[2].headers, "Idempotency-Key": slow["key"]},
                    timeout=10,
                )
                load.run_for(5)
        assert slow["outcome"] in {"ConnectionError", "ChunkedEncodingError"}, slow
        # The killed request's transaction rolled back; its retry with the same key places the order once.
        assert retry.status_code == 201, retry.text
        placed = query(url, "SELECT count(*) FROM orders WHERE user_id = %s", (buyers[2].user_id,))[0][0]
        assert placed == 1
        _finish(
            "worker SIGKILL + master HUP",
            load,
            url,
            products,
            [server.log.read_text(errors="replace")],
            order_killed_mid_transaction=f"{slow['outcome']}, its retry {retry.status_code}",
        )


# ---- PostgreSQL restarted ---------------------------------------------------------------------


def test_postgresql_restart_answers_503_then_recovers(template: str, tmp_path: Path) -> None:
    skip_unless_root()
    with fresh_database(template, "pg") as url:
        products = seed_catalog(url)
        port = free_port()
        server = start_gunicorn(port, 3, app_env(url, tmp_path), tmp_path / "gunicorn.log")
        with running(server):
            base = f"http://127.0.0.1:{port}"
            buyers = register_buyers(base, 2)
            load = Load(base, buyers, list(products))
            with load, postgres_brought_back():
                load.run_for(4)
                load.mark("fault_start")
                pg_ctl("stop")
                load.run_for(3)  # the outage: short, the server is shared
                pg_ctl("start")
                wait_until(pg_ready, timeout=60, interval=0.1, what="PostgreSQL to be ready")
                load.mark("fault_end")
                load.run_for(6)
        during = Counter(
            a.outcome for a in load.attempts if load.marks["fault_start"] < a.started < load.marks["fault_end"]
        )
        assert during["503"] > 0, f"no 503 seen during the outage: {during}"
        assert set(during) <= {"200", "201", "304", "503"}, during
        _finish(
            "PostgreSQL restart",
            load,
            url,
            products,
            [server.log.read_text(errors="replace")],
            allowed_5xx=frozenset({503}),
            outage_503=during["503"],
        )


# ---- Redis stopped ----------------------------------------------------------------------------


def test_redis_stopped_for_10s_serves_everything_and_revocations_hold(template: str, tmp_path: Path) -> None:
    redis_server = OwnRedis(tmp_path)
    redis_server.start()
    try:
        with fresh_database(template, "redis") as url:
            products = seed_catalog(url)
            port = free_port()
            env = app_env(
                url,
                tmp_path,
                REDIS_URL=redis_server.url,
                RATELIMIT_ENABLED="true",
                RATELIMIT_ANON="100000/minute",
                RATELIMIT_USER="100000/minute",
                RATELIMIT_AUTH="100000/minute",
            )
            server = start_gunicorn(port, 3, env, tmp_path / "gunicorn.log")
            with running(server):
                base = f"http://127.0.0.1:{port}"
                buyers = register_buyers(base, 4)
                revoked_before, revoked_during = buyers[2], buyers[3]
                assert _logout(base, revoked_before) == 204
                load = Load(base, buyers[:2], list(products))
                with load:
                    load.run_for(4)
                    load.mark("fault_start")
                    redis_server.stop()
                    load.run_for(2)
                    assert _me(base, revoked_before) == 401
                    assert _logout(base, revoked_during) == 204
                    assert _me(base, revoked_during) == 401
                    load.run_for(8)
                    redis_server.start()  # empty: nothing was persisted
                    load.mark("fault_end")
                    load.run_for(5)
                assert _me(base, revoked_before) == 401 and _me(base, revoked_during) == 401
                assert _me(base, buyers[0]) == 200
                samples = parse_metrics(requests.get(f"{base}/metrics", timeout=10).text)
            cache_errors = metric_sum(samples, "shop_cache_errors_total")
            fallbacks = metric_sum(samples, "shop_rate_limit_fallbacks_total")
            assert cache_errors > 0 and fallbacks > 0, "Redis was not in use, or its outage was not noticed"
            summary = _finish(
                "Redis stopped 10 s",
                load,
                url,
                products,
                [server.log.read_text(errors="replace")],
                cache_errors=cache_errors,
                limit_fallbacks=fallbacks,
            )
            assert summary["client_errors"] == {}, "a Redis outage must cost the client nothing"
    finally:
        redis_server.stop()


def _me(base: str, buyer: Any) -> int:
    return requests.get(f"{base}/api/users/me/", headers=buyer.headers, timeout=10).status_code


def _logout(base: str, buyer: Any) -> int:
    return requests.post(f"{base}/api/token/revoke/", headers=buyer.headers, timeout=10).status_code


# ---- RabbitMQ stopped -------------------------------------------------------------------------


def test_rabbitmq_stopped_for_10s_every_email_delivered_once(template: str, tmp_path: Path) -> None:
    skip_unless_root()
    broker = broker_url()
    fresh_vhost()
    sink = MailSink()
    with fresh_database(template, "mq") as url, SMTPServer(sink) as smtp:
        products = seed_catalog(url)
        port = free_port()
        mail = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp.port)}
        env = app_env(url, tmp_path, CELERY_BROKER_URL=broker, **mail)
        background = {
            **env,
            "DATABASE_URL": url,
            "OUTBOX_RELAY_SECONDS": "1",
            "OUTBOX_GRACE_SECONDS": "3",
            "EMAIL_RETRY_BACKOFF_MAX": "1",
        }
        background.pop("PROMETHEUS_MULTIPROC_DIR")
        server = start_gunicorn(port, 3, env, tmp_path / "gunicorn.log")
        worker = celery_process("worker", background, tmp_path)
        beat = celery_process("beat", background, tmp_path)
        with running(server, worker, beat):
            base = f"http://127.0.0.1:{port}"
            buyers = register_buyers(base, 2)
            load = Load(base, buyers, list(products), pause=0.05)
            with load, rabbitmq_brought_back():
                load.run_for(4)
                load.mark("fault_start")
                rabbitmqctl("stop_app")
                load.run_for(10)
                rabbitmqctl("start_app")
                rabbitmqctl("await_startup")
                load.mark("fault_end")
                load.run_for(5)
            settled = wait_until(
                lambda: _all_sent(url, sink), timeout=90, interval=0.5, what="every owed email to be sent"
            )
            time.sleep(3)  # a duplicate, if any, would arrive now
            orders = settled
        subjects = Counter(sink.subjects())
        assert subjects == Counter(f"Order Confirmation - Order #{order_id}" for order_id in orders)
        _finish(
            "RabbitMQ stopped 10 s",
            load,
            url,
            products,
            [server.log.read_text(errors="replace")],
            emails_sent=sum(subjects.values()),
            emails_duplicated=sum(count - 1 for count in subjects.values()),
        )


def _all_sent(url: str, sink: MailSink) -> list[int] | None:
    rows = query(url, "SELECT o.id, e.status FROM orders o LEFT JOIN email_outbox e ON e.order_id = o.id")
    if any(status != "sent" for _, status in rows) or len(sink.received) < len(rows):
        return None
    return [order_id for order_id, _ in rows]


# ---- one of two instances behind Nginx killed -------------------------------------------------


def test_instance_killed_behind_nginx_then_restarted(template: str, tmp_path: Path) -> None:
    nginx = need_binary("nginx")
    with fresh_database(template, "edge") as url, nginx_prefix() as prefix:
        products = seed_catalog(url)
        ports = [free_port(), free_port()]
        env = app_env(url, tmp_path)
        apps = {port: start_gunicorn(port, 2, env, tmp_path / f"gunicorn-{port}-1.log") for port in ports}
        logs: list[Server] = list(apps.values())
        try:
            cert, key = make_certificate(prefix / "tls")
            edge_ports = {"http": free_port(), "https": free_port(), "status": free_port()}
            config = prefix / "nginx.conf"
            config.write_text(
                load_nginx_render().render(
                    user=nginx_user(),
                    prefix=str(prefix),
                    http_listen=f"127.0.0.1:{edge_ports['http']}",
                    https_listen=f"127.0.0.1:{edge_ports['https']}",
                    status_listen=f"127.0.0.1:{edge_ports['status']}",
                    cert=str(cert),
                    key=str(key),
                    upstream=[f"127.0.0.1:{port}" for port in ports],
                    rate=100000,
                    burst=100000,
                )
            )
            edge = start_nginx(nginx, prefix, config, list(edge_ports.values()))
            with running(edge):
                base = f"https://127.0.0.1:{edge_ports['https']}"
                buyers = register_buyers(base, 3, verify=str(cert))
                load = Load(base, buyers, list(products), verify=str(cert))
                with load:
                    load.run_for(4)
                    load.mark("fault_start")
                    victim = ports[0]
                    apps[victim].kill()
                    load.run_for(3)
                    apps[victim] = start_gunicorn(victim, 2, env, tmp_path / f"gunicorn-{victim}-2.log")
                    logs.append(apps[victim])
                    load.mark("fault_end")
                    load.run_for(6)
        finally:
            for instance in apps.values():
                instance.stop()
        reads = Counter(a.outcome for a in load.attempts if a.kind in {"read", "probe"})
        assert set(reads) <= {"200", "304"}, f"a GET failed through Nginx: {reads}"
        orders = Counter(a.outcome for a in load.attempts if a.kind == "order")
        # A POST in flight on the killed instance is a 502 (Nginx never resends a POST); its retry
        # waits for the dead request's transaction to end, or, past the statement timeout, is a 409.
        assert set(orders) <= {"201", "502", "409"}, orders
        _finish(
            "instance killed behind Nginx",
            load,
            url,
            products,
            [server.log.read_text(errors="replace") for server in logs],
        )
