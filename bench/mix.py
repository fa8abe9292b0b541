"""The many-connections run: shoppers through Nginx for a minute (bench/mix.lua), read back from Nginx's log
and the shop's own counters."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.common import BENCH, CATEGORIES, SPREAD, load_average, log
from bench.measure import Scenario, _percentile, run_wrk
from bench.report import mix_checks, verdict
from bench.stack import Stack

# 10,000 connections

# wrk scans every open connection's timer on each turn of its loop: 10,000 connections with think
# times cost it about 0.6 ms of CPU a request against 0.19 ms with 1,000 (measured with
# /usr/bin/time on the mix, 2026-12-03), a third of the machine. It drives this many busy shoppers;
# the others are slow shoppers, one read every SLOW_THINK_S on average (kept under Nginx's 65 s keep-alive).
WRK_SHOPPERS = 1000
SLOW_THINK_S = 40.0


class SlowShoppers:
    """bench/idle_shoppers.py as a child process: connects, then reads from `start()` to `finish()`."""

    def __init__(self, url: str, connections: int) -> None:
        self.process: subprocess.Popen[str] | None = None
        if connections <= 0:
            return
        command = [sys.executable, str(BENCH / "idle_shoppers.py"), url, "--connections", str(connections)]
        command += ["--think-s", str(SLOW_THINK_S), "--products", str(SPREAD), "--categories", str(CATEGORIES)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()  # after every handshake: none of them in the measured window
        if not ready.startswith("ready"):
            raise RuntimeError(f"slow shoppers did not connect: {ready!r}")
        log(f"{ready.split()[1]} slow shoppers connected through Nginx")

    def start(self) -> None:
        if self.process:
            self.process.send_signal(signal.SIGUSR1)

    def finish(self) -> dict[str, Any]:
        if not self.process:
            return {"connections": 0, "requests": 0, "failed": 0, "p50_ms": 0.0, "p99_ms": 0.0, "statuses": {}}
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=120)
        figures = json.loads(out.strip().splitlines()[-1])
        answered_badly = sum(n for status, n in figures["statuses"].items() if status not in ("200", "304"))
        figures["failed"] = answered_badly + sum(figures["errors"].values())
        self.process = None
        return figures

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def slow_shoppers(url: str, connections: int) -> Iterator[SlowShoppers]:
    shoppers = SlowShoppers(url, connections)
    try:
        yield shoppers
    finally:
        shoppers.close()


# What bench/mix.lua reads (keep the two in step): its search words, orderings and page ranges.
WORDS = ("wireless", "mouse", "keyboard", "compact", "lamp", "smart", "speaker", "desk", "silent", "webcam")
ORDERINGS = ("price", "-price", "name", "-created_at")


def mix_pages() -> list[str]:
    """Every catalog page bench/mix.lua can ask for."""
    pages = [f"/api/products/?page={page}" for page in range(1, 501)]
    pages += [f"/api/products/{product}/" for product in range(1, SPREAD + 1)]
    pages += [
        f"/api/products/?category={category}&ordering={ordering}&page={page}"
        for category in range(1, CATEGORIES + 1)
        for ordering in ORDERINGS
        for page in range(1, 26)
    ]
    pages += [f"/api/products/?search={word}&in_stock=true" for word in WORDS]
    pages += [
        f"/api/products/?min_price={low * 10}&max_price={low * 10 + 50}&page={page}"
        for low in range(41)
        for page in range(1, 11)
    ]
    return [*pages, "/api/categories/"]


def warm_catalog(base_url: str) -> int:
    """Read every page the mix can ask for once, straight from the shop: its cache as a shop's is in service.

    A shop that has served for a few minutes holds its catalog in its cache (entries live
    CACHE_DEFAULT_TIMEOUT, 300 s); a run from a cold cache would measure first reads, which a shop
    in service pays once per entry, not per visitor. Answers the number of pages read.
    """
    pages = mix_pages()

    def read(page: str) -> None:
        requests.get(base_url + page, timeout=30).raise_for_status()  # sync workers close every connection

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, pages))
    return len(pages)


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
    # wrk drives the busy shoppers; past WRK_SHOPPERS the rest are slow ones (bench/idle_shoppers.py).
    busy = min(connections, WRK_SHOPPERS)
    slow = connections - busy
    slow_rate = slow / SLOW_THINK_S
    # Idle longer than Nginx's keep-alive timeout (65 s) and a shopper would be disconnected: cap it.
    think_ms = min(round(busy * 1000 / max(1.0, args.mix_rate - slow_rate)), 40_000)
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
            "CONNECTIONS": str(busy),
            "THREADS": "2",
        },
    )
    log(
        f"{scenario.name}: {args.mix_seconds:.0f} s, think time {think_ms / 2000:.1f} to {think_ms * 1.5 / 1000:.1f} s "
        f"(offered ≈ {args.mix_rate}/s)"
    )
    started = time.monotonic()
    warmed = warm_catalog(stack.warm)
    log(f"the shop's cache holds the {warmed:,} pages the mix can read ({time.monotonic() - started:.0f} s)")
    with slow_shoppers(stack.nginx_warm, slow) as shoppers:
        load = load_average()
        cache_before = app_cache_counts(stack.warm)
        shoppers.start()
        figures, output = run_wrk(tools, scenario, args.mix_seconds, connections=busy, timeout="30s")
        slow_figures = shoppers.finish()
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
        "busy": busy,
        "slow": slow_figures,
        "slow_think_s": SLOW_THINK_S,
        "rps": figures["rps"] + slow_figures["requests"] / args.mix_seconds,
        "requests": int(figures["requests"]) + slow_figures["requests"],
        "p50_ms": figures["p50_ms"],
        # The worse of the two clients' p99s: wrk's shoppers and the slow ones are reported apart.
        "p99_ms": max(figures["p99_ms"], slow_figures["p99_ms"]),
        # Sold-out refusals are answers, counted apart; everything else that is not 2xx failed.
        "sold_out": sum(count for key, count in statuses.items() if key.endswith(" 409")),
        "failed": int(figures["non_2xx"] + figures["socket_errors"])
        - sum(count for key, count in statuses.items() if key.endswith(" 409"))
        + slow_figures["failed"],
        "app_cache": app_cache,
        "app_cache_hit_ratio": app_cache["hit"] / lookups if lookups else None,
        # Each page's first read in the run is a miss unless an earlier scenario read it: how many there were.
        "distinct_pages": len({line.get("uri") for line in lines if line.get("method") == "GET"}),
        "warmed_pages": warmed,
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


def mix_section(mix: dict[str, Any] | None) -> str:
    if not mix:
        return "The many-connections run was skipped (`--mix-seconds 0`)."
    checks = mix_checks(mix)
    lines = [
        f"{mix['connections']:,} connections through Nginx (TLS) for {mix['seconds']:.0f} s: "
        f"{mix.get('busy', mix['connections']):,} busy shoppers (wrk, bench/mix.lua) waiting "
        f"{mix['think_ms'] / 2000:.1f} to {mix['think_ms'] * 1.5 / 1000:.1f} s between requests, and "
        f"{mix.get('slow', {}).get('connections', 0):,} slow shoppers (bench/idle_shoppers.py, its reads) waiting "
        f"{mix.get('slow_think_s', 0) / 2:.0f} to {mix.get('slow_think_s', 0) * 1.5:.0f} s, connected before the "
        f"run (offered ≈ {mix['offered_rps']:,}/s in all); 1-minute load average at the start {mix['load']:.1f}. "
        f"The slow shoppers: {mix.get('slow', {}).get('requests', 0):,} reads, p99 "
        f"{mix.get('slow', {}).get('p99_ms', 0):.0f} ms, {mix.get('slow', {}).get('failed', 0):,} failed. "
        f"Before it, each of the {mix.get('warmed_pages', 0):,} catalog pages the mix can read was read once "
        "from the shop, so its cache is as a shop's in service is (entries live 300 s).",
        "",
        "| figure | measured | target | |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {name} | {value} | {target} | {verdict(ok)} |" for name, value, target, ok in checks]
    cut = sum(count for key, count in mix["statuses"].items() if key.endswith(" 499"))
    statuses = ", ".join(f"{key}: {value:,}" for key, value in sorted(mix["statuses"].items()))
    statuses += f" (499: the client went away, {cut:,} in all: in flight when wrk stopped, or past its time-out)"
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
