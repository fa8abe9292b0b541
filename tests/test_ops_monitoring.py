"""Monitoring configs checked by the tools that read them: promtool, amtool, and Grafana's provisioning shape."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.ops_processes import ROOT, need_binary

MONITORING = ROOT / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=MONITORING, capture_output=True, text=True, timeout=60)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
    return found


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_prometheus_config_passes_promtool() -> None:
    result = run_tool(need_binary("promtool"), "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = need_binary("promtool")
    checked = run_tool(promtool, "check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run_tool(promtool, "test", "rules", "tests/alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "ShopHigh5xxRatio",
        "ShopHighLatencyP95",
        "ShopInstanceDown",
        "ShopOutboxBacklogGrowing",
        "ShopEmailsFailing",
        "ShopQueueDepthHigh",
    } <= names
    # Every alert is unit-tested, firing at least once.
    unit_tests = yaml.safe_load((MONITORING / "tests" / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in unit_tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert names - {"ShopTargetDown", "ShopTasksFailing"} <= fired


def test_every_alert_has_a_runbook_line_saying_what_it_means_and_what_to_do() -> None:
    for rule in alert_rules():
        runbook = rule["annotations"].get("runbook", "")
        assert re.fullmatch(r"Means: .{20,}\. Do: .{20,}", runbook), (rule["alert"], runbook)


def test_every_scrape_job_has_an_alert_for_when_its_target_is_absent() -> None:
    jobs = {job["job_name"] for job in yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"]}
    (absent,) = (rule for rule in alert_rules() if rule["alert"] == "ShopScrapeTargetAbsent")
    watched = set(re.findall(r'absent\(up\{job="([^"]+)"\}\)', absent["expr"]))
    assert watched == jobs, (
        f"jobs without an absent() alert: {sorted(jobs - watched)}; unknown: {sorted(watched - jobs)}"
    )
    assert "$labels.job" in absent["annotations"]["summary"]


def test_alertmanager_config_passes_amtool_and_sends_email() -> None:
    result = run_tool(need_binary("amtool"), "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert receivers[config["route"]["receiver"]]["email_configs"]
    assert all(receiver.get("email_configs") for receiver in receivers.values())


def test_grafana_provisioning_wires_the_datasource_to_every_panel() -> None:
    datasources = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/shop.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"

    dashboards = sorted(DASHBOARDS.glob("*.json"))
    assert dashboards
    uids = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == prometheus["uid"], panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == prometheus["uid"]
                assert target["expr"].strip()
    assert len(uids) == len(dashboards)


@pytest.mark.parametrize(
    "needed",
    [
        "flask_http_request_duration_seconds_count",  # traffic by endpoint
        'status=~"5.."',  # errors
        "histogram_quantile(0.95",  # latency percentiles by endpoint
        "histogram_quantile(0.99",
        "shop_orders_placed_total",  # orders per minute
        'shop_cache_requests_total{result="hit"}',  # cache hit ratio
        "shop_emails_total",  # emails
        "rabbitmq_detailed_queue_messages_ready",  # queue depth
        "shop_process_cpu_seconds_total",  # process CPU
        "shop_process_resident_memory_bytes",  # and memory
    ],
)
def test_the_dashboard_shows_what_operators_need(needed: str) -> None:
    assert any(needed in expr for _, expr in dashboard_exprs()), needed


def test_every_metric_the_dashboards_and_alerts_read_is_exported_or_scraped() -> None:
    """A typo in a metric name is a panel that stays empty forever: every shop_* name must exist."""
    from shop.core import metrics

    exported = set()
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if callable(describe) and getattr(value, "_name", None):
            for family in describe():
                exported.update(sample.name for sample in family.samples)
                exported.add(family.name)
                exported.add(family.name + "_total")
                exported.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    queries = [expr for _, expr in dashboard_exprs()] + [rule["expr"] for rule in alert_rules()]
    used = {name for query in queries for name in re.findall(r"\bshop_[a-z_]+", query)}
    assert used
    assert used <= exported, used - exported
