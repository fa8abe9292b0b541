"""A real gunicorn (two workers, the project's gunicorn.conf.py) scraped by a real Prometheus.

/metrics must count what every worker served, and every PromQL expression of the dashboards and
alert rules must evaluate on the live data without error, the key ones returning series.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from flask import Flask

from tests.factories import make_product
from tests.ops_processes import (
    ROOT,
    Server,
    free_port,
    gunicorn_env,
    metric_sum,
    need_binary,
    parse_metrics,
    running,
    start_gunicorn,
    wait_until,
)
from tests.test_ops_monitoring import alert_rules, dashboard_exprs

pytestmark = pytest.mark.services

# Grafana's own variables, as Grafana would fill them in for a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

# Panels that must show data as soon as the app has served some requests (the rest read other
# services' exporters, or counters that only move with orders and emails: they must still parse).
KEY_PANELS = {
    "Requests per second by endpoint",
    "Requests per second by status",
    "p50 latency by endpoint",
    "p95 latency by endpoint",
    "p99 latency by endpoint",
    "Orders per minute",
    "Catalog cache hit ratio",
    "Emails per minute",
    "CPU per process",
    "Memory per process",
    "Targets up",
}


@dataclass
class App:
    port: int
    server: Server

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return parse_metrics(self.get("/metrics").text)

    def access_pids(self, path: str) -> Counter[int]:
        """How many requests for `path` each worker pid wrote to the JSON access log."""
        pids: Counter[int] = Counter()
        for line in self.server.output().splitlines():
            if line.startswith("{") and '"shop.access"' in line:
                record = json.loads(line)
                if record["path"] == path:
                    pids[record["pid"]] += 1
        return pids


@pytest.fixture
def live_app(app: Flask, tmp_path: Path) -> Iterator[App]:
    port = free_port()
    env = gunicorn_env(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path / "metrics")
    server = start_gunicorn(port, 2, env, tmp_path / "gunicorn.log")
    with running(server):
        yield App(port, server)


def send_concurrently(app: App, paths: list[str], threads: int = 8) -> list[int]:
    """GET every path, from several threads at once so that every worker gets some."""
    statuses: list[int] = []
    lock = threading.Lock()
    work = list(paths)

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if not work:
                        return
                    path = work.pop()
                status = session.get(f"http://127.0.0.1:{app.port}{path}", timeout=10).status_code
                with lock:
                    statuses.append(status)

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    return statuses


def test_metrics_count_the_requests_of_every_worker(live_app: App) -> None:
    before = live_app.metrics()
    statuses = send_concurrently(live_app, ["/healthz"] * 150 + ["/no/such/page"] * 30)
    assert sorted(statuses) == [200] * 150 + [404] * 30

    after = live_app.metrics()

    def served(name: str, **labels: str) -> float:
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    assert served("flask_http_request_total") == 180
    assert served("flask_http_request_total", status="404") == 30
    assert served("flask_http_request_duration_seconds_count", url_rule="/healthz") == 150
    # Both workers served: each wrote access lines, and each has its own CPU and memory series.
    pids = live_app.access_pids("/healthz")
    assert len(pids) == 2, pids
    assert {int(labels["pid"]) for labels, _ in after["shop_process_resident_memory_bytes"]} >= set(pids)


def test_a_dead_workers_counts_stay_and_its_gauges_go(live_app: App) -> None:
    send_concurrently(live_app, ["/healthz"] * 60)
    pids = set(live_app.access_pids("/healthz"))
    assert len(pids) == 2
    total = metric_sum(live_app.metrics(), "flask_http_request_total")

    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    booted = re.compile(r"Booting worker with pid: (\d+)")
    wait_until(lambda: len(booted.findall(live_app.server.output())) >= 3, timeout=30, what="a replacement worker")

    def victim_gone() -> dict[str, Any] | None:
        samples = live_app.metrics()
        live = {labels["pid"] for labels, _ in samples.get("shop_process_resident_memory_bytes", [])}
        return samples if str(victim) not in live else None

    samples = wait_until(victim_gone, timeout=10, what="the dead worker's gauges to go")
    assert metric_sum(samples, "flask_http_request_total") == total


@pytest.fixture
def prometheus(live_app: App, tmp_path: Path) -> Iterator[str]:
    """Prometheus on the project's own prometheus.yml and alerts.yml, scraping the live app every second."""
    binary = need_binary("prometheus")
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    config.pop("alerting")
    config["rule_files"] = [str(ROOT / "monitoring" / name) for name in config["rule_files"]]
    (shop_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "shop"]
    shop_job.pop("dns_sd_configs")
    shop_job["static_configs"] = [{"targets": [f"127.0.0.1:{live_app.port}"], "labels": {"instance": "app-1"}}]
    config["scrape_configs"] = [shop_job]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))

    port = free_port()
    server = Server(
        "prometheus",
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        tmp_path / "prometheus.log",
    )
    with running(server):
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{base}/-/ready", timeout=2).ok, timeout=30, what="Prometheus to be ready")
        yield base


def query(base: str, promql: str) -> list[dict[str, Any]]:
    for name, value in GRAFANA_VARIABLES.items():
        promql = promql.replace(name, value)
    response = requests.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (promql, body)
    return body["data"]["result"]


def test_prometheus_evaluates_every_dashboard_and_alert_expression(live_app: App, prometheus: str, app: Flask) -> None:
    with app.app_context():
        product = make_product()
    paths = ["/healthz", "/api/products/", f"/api/products/{product.id}/", "/api/categories/", "/nope"]

    def scraped_enough() -> bool:
        send_concurrently(live_app, paths * 4, threads=4)
        result = query(prometheus, 'count_over_time(up{job="shop"}[1m])')
        return bool(result) and float(result[0]["value"][1]) >= 5

    wait_until(scraped_enough, timeout=30, interval=0.5, what="five scrapes of the app")
    assert query(prometheus, 'up{job="shop"}')[0]["value"][1] == "1"

    empty = []
    for title, expr in dashboard_exprs():
        result = query(prometheus, expr)
        if title in KEY_PANELS and not result:
            empty.append((title, expr))
    assert not empty, f"key panels without data: {empty}"

    for rule in alert_rules():
        query(prometheus, rule["expr"])

    # Prometheus itself loaded the rule files and evaluates every rule without error.
    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules) else None

    rules = wait_until(rules_evaluated, timeout=15, what="every rule to be evaluated")
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    # A healthy app raises nothing, but the absent-target alert for exactly the jobs this Prometheus
    # does not scrape (it scrapes the app alone): never for the app itself.
    active = [rule for rule in rules if rule["state"] != "inactive"]
    assert [rule["name"] for rule in active] == ["ShopScrapeTargetAbsent"]
    jobs = {
        job["job_name"]
        for job in yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert {alert["labels"]["job"] for alert in active[0]["alerts"]} == jobs - {"shop"}
