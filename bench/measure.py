"""Measuring one scenario: wrk or pgbench next to its ceiling, the serving processes' CPU time; the scenarios."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BENCH, DETAIL_IDS, PAGES, SPREAD, load_average, log
from bench.report import Measure
from bench.services import Postgres
from bench.stack import Stack, fetch_once

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
    prime: tuple[str, ...] = ()  # fetched once before the group's warm-up


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
            # Every page has its copy before the runs, which start after the copies expired: each run
            # measures the steady state (every page refreshed once a period), not the first fill.
            Scenario("anonymous product detail, Nginx micro-cache", edge, stack.nginx_warm, script="detail.lua",
                     env=details, ceiling=static, target=0.80, serving=nginx_warm + warm,
                     prime=tuple(f"{stack.nginx_warm}/api/products/{n}/" for n in range(1, DETAIL_IDS + 1))),
        ],
        [
            Scenario(pgbench, "ceiling", "pgbench -c 16", pgbench=True),
            Scenario("order creation, direct", direct, stack.warm, script="orders.lua", env=orders, ceiling=pgbench,
                     target=0.40, cpu_limit_ms=4.0, note="aim: 50%", serving=warm),
            Scenario("order creation, Nginx", proxied, stack.nginx_warm, script="orders.lua", env=orders,
                     ceiling=pgbench, serving=nginx_warm + warm),
        ],
    ]  # fmt: skip


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
            fetch_once(scenario.prime)
            if not scenario.pgbench:
                run_wrk(tools, scenario, 1)
        for _ in range(args.rounds):
            measures.extend(measure(scenario, tools, pg, buyer_id, args.seconds, work) for scenario in group)
    return measures
