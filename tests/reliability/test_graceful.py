"""Graceful shutdown: gunicorn's HUP and TERM finish the requests in flight; a rolling restart loses none.

The request in flight is an order held inside its transaction: the test holds the product's row
lock (as a concurrent buyer would) while it signals gunicorn, then lets go.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests

from tests.ops_processes import (
    Server,
    free_port,
    load_nginx_render,
    make_certificate,
    need_binary,
    nginx_prefix,
    nginx_user,
    running,
    start_gunicorn,
    start_nginx,
    wait_until,
)
from tests.reliability.invariants import check_orders
from tests.reliability.load import Load
from tests.reliability.stack import (
    access_lines,
    app_env,
    fresh_database,
    query,
    register_buyers,
    report,
    seed_catalog,
    server_errors_in_logs,
    workers_of,
)
from tests.reliability.test_faults import _slow_order

pytestmark = pytest.mark.services


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["HUP", "TERM"])
def test_a_slow_request_in_flight_survives_the_signal(template: str, tmp_path: Path, sig: signal.Signals) -> None:
    with fresh_database(template, "graceful") as url:
        products = seed_catalog(url, products=1)
        port = free_port()
        # The row lock is held longer than the default statement_timeout (5 s) might allow.
        env = app_env(url, tmp_path, DB_STATEMENT_TIMEOUT_MS="60000")
        server = start_gunicorn(port, 2, env, tmp_path / "gunicorn.log")
        with running(server):
            base = f"http://127.0.0.1:{port}"
            (buyer,) = register_buyers(base, 1)
            old_workers = set(workers_of(server))
            thread, slow, holder = _slow_order(base, url, buyer, next(iter(products)))
            try:
                server.process.send_signal(sig)
                if sig == signal.SIGHUP:
                    # New workers start while the old one still holds the request.
                    wait_until(
                        lambda: len(set(workers_of(server)) - old_workers) == 2, timeout=30, what="the new workers"
                    )
                    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
                else:
                    # Shutting down: the idle worker is gone, the busy one still holds the request.
                    wait_until(lambda: len(workers_of(server)) == 1, timeout=30, what="the idle worker to exit")
                assert thread.is_alive()
            finally:
                holder.commit()  # the buyer ahead lets go of the row
                holder.close()
            thread.join(30)
            if sig == signal.SIGTERM:
                assert server.process.wait(30) == 0  # the master exits cleanly once the request is done
        assert slow.get("outcome") == 201, slow
        assert query(url, "SELECT count(*) FROM orders")[0][0] == 1
        served_by = [line["pid"] for line in access_lines(server.log.read_text()) if line["path"] == "/api/orders/"]
        assert served_by and served_by[0] in old_workers  # a worker that had been told to stop answered it
        assert server_errors_in_logs([server.log.read_text()]) == []


def test_rolling_restart_of_two_instances_behind_nginx_loses_no_request(template: str, tmp_path: Path) -> None:
    """Each instance in turn: out of Nginx's upstream (reload), TERM, started again, back in (reload).

    A plain TERM behind Nginx is not enough: connections queued on the instance's socket but not
    yet accepted when it stops are reset after Nginx has sent the request, and Nginx rightly
    never sends a POST again, so the client gets a 502. Taking the instance out first avoids that.
    """
    nginx = need_binary("nginx")
    with fresh_database(template, "rolling") as url, nginx_prefix() as prefix:
        products = seed_catalog(url)
        ports = [free_port(), free_port()]
        env = app_env(url, tmp_path)
        apps = {port: start_gunicorn(port, 2, env, tmp_path / f"gunicorn-{port}-1.log") for port in ports}
        logs = [server.log for server in apps.values()]
        try:
            cert, key = make_certificate(prefix / "tls")
            edge_ports = [free_port(), free_port(), free_port()]
            config = prefix / "nginx.conf"

            def render(down: int | None = None) -> str:
                text = load_nginx_render().render(
                    user=nginx_user(),
                    prefix=str(prefix),
                    http_listen=f"127.0.0.1:{edge_ports[0]}",
                    https_listen=f"127.0.0.1:{edge_ports[1]}",
                    status_listen=f"127.0.0.1:{edge_ports[2]}",
                    cert=str(cert),
                    key=str(key),
                    upstream=[f"127.0.0.1:{port}" for port in ports],
                    rate=100000,
                    burst=100000,
                )
                if down is not None:
                    marked = text.replace(f"server 127.0.0.1:{down} ", f"server 127.0.0.1:{down} down ")
                    assert marked != text
                    text = marked
                return text

            config.write_text(render())
            edge = start_nginx(nginx, prefix, config, edge_ports)
            with running(edge):
                base = f"https://127.0.0.1:{edge_ports[1]}"
                buyers = register_buyers(base, 3, verify=str(cert))
                load = Load(base, buyers, list(products), verify=str(cert))
                with load:
                    load.run_for(3)
                    load.mark("fault_start")
                    for generation, port in enumerate(ports, start=2):
                        _reload(edge, config, render(down=port))
                        apps[port].stop()  # TERM: finish what is in flight, then exit
                        apps[port] = start_gunicorn(port, 2, env, tmp_path / f"gunicorn-{port}-{generation}.log")
                        logs.append(apps[port].log)
                        _reload(edge, config, render())
                        load.run_for(1)
                    load.mark("fault_end")
                    load.run_for(3)
        finally:
            for instance in apps.values():
                instance.stop()
        summary = load.summary(load.marks["fault_end"])
        summary.update(check_orders(url, load, products))
        report("rolling restart behind Nginx", summary)
        # Nothing failed in the app or in Nginx. The one thing a client may see is Nginx's reload
        # closing its idle keep-alive connection as it sends on it: a connection error before the
        # request was read, which the client retries (with the same Idempotency-Key for an order).
        # On TLS that close shows as requests' ConnectionError, or its subclass SSLError when it cuts
        # the TLS stream itself ("EOF occurred in violation of protocol").
        connection_closed = {"ConnectionError", "SSLError"}
        assert set(summary["client_errors"]) <= connection_closed, "a request failed during the rolling restart"
        assert summary["reads_failed"] == 0 and summary["orders_created"] == summary["orders"] > 0
        assert server_errors_in_logs([log.read_text(errors="replace") for log in logs]) == []


def _reload(edge: Server, config: Path, text: str) -> None:
    """`nginx -s reload` with a new config: wait until every old worker has finished and gone."""
    old = set(workers_of(edge))
    config.write_text(text)
    edge.process.send_signal(signal.SIGHUP)
    wait_until(lambda: not set(workers_of(edge)) & old, timeout=30, what="Nginx's old workers to finish")
