"""`make soak`: the steady mixed load for a long time (10 minutes) against a local production-like stack.

Starts on loopback: a PostgreSQL database of its own (`shop_rel_soak_*` on the server of
SOAK_DATABASE_URL or TEST_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432), a
redis-server of its own, and gunicorn with the production config (WEB_CONCURRENCY workers, Redis
for the cache, the limits and the blocklist, limits raised for the load). Samples, every
--every seconds: each worker's resident memory, the database's open connections, and the
Prometheus multiprocess directory (files and bytes). At the end it checks the invariants of the
fault tests and writes reports/soak.md. Exit status 1 when something is not flat or not right.

    .venv/bin/python -m tests.reliability.soak --seconds 600
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import requests

os.environ.setdefault("TEST_DATABASE_URL", os.environ.get("SOAK_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432"))

from tests.ops_processes import ROOT, free_port, running, start_gunicorn
from tests.reliability.invariants import check_orders
from tests.reliability.load import Load
from tests.reliability.stack import (
    PREFIX,
    OwnRedis,
    admin,
    app_env,
    database_url,
    drop_database,
    migrate,
    query,
    register_buyers,
    seed_catalog,
    server_errors_in_logs,
    workers_of,
)

REPORT = ROOT / "reports" / "soak.md"
# "Flat": after the first sample (warm caches and pools), memory may grow by this much at most.
RSS_GROWTH_LIMIT = 0.20


def sample(server: Any, url: str, metrics_dir: Path, load: Load) -> dict[str, Any]:
    rss = {}
    for pid in workers_of(server):
        try:
            rss[pid] = psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    connections = query(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")[0][0] - 1
    files = list(metrics_dir.iterdir())
    return {
        "t": round(time.monotonic() - load.marks["start"]),
        "requests": len(load.attempts),
        "failed": len(load.failures()),
        "rss_mb": {pid: round(value / 2**20, 1) for pid, value in rss.items()},
        "db_connections": connections,
        "metrics_files": len(files),
        "metrics_kb": round(sum(path.stat().st_size for path in files) / 1024),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--every", type=float, default=30)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--buyers", type=int, default=3)
    parser.add_argument("--readers", type=int, default=3)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="shop-soak-"))
    name = f"{PREFIX}soak_{os.getpid()}"
    admin(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    redis_server = OwnRedis(work)
    try:
        migrate(url)
        products = seed_catalog(url, stock=10_000_000)
        redis_server.start()
        metrics_dir = work / "metrics"
        env = app_env(
            url,
            work,
            REDIS_URL=redis_server.url,
            RATELIMIT_ENABLED="true",
            RATELIMIT_ANON="1000000/minute",
            RATELIMIT_USER="1000000/minute",
            RATELIMIT_AUTH="1000000/minute",
        )
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        port = free_port()
        server = start_gunicorn(port, args.workers, env, work / "gunicorn.log")
        samples = []
        with running(server):
            base = f"http://127.0.0.1:{port}"
            load = Load(base, register_buyers(base, args.buyers), list(products), readers=args.readers)
            with load:
                deadline = time.monotonic() + args.seconds
                while True:
                    load.run_for(min(args.every, max(0.0, deadline - time.monotonic())))
                    samples.append(sample(server, url, metrics_dir, load))
                    print(_row(samples[-1]), flush=True)
                    if time.monotonic() >= deadline:
                        break
            metrics_ok = requests.get(f"{base}/metrics", timeout=10).status_code == 200
        summary = load.summary()
        summary.update(check_orders(url, load, products))
        errors = server_errors_in_logs([server.log.read_text(errors="replace")])
        verdicts = _verdicts(samples, summary, errors, metrics_ok, args)
        _write_report(samples, summary, verdicts, args)
        print(REPORT.read_text())
        return 0 if all(ok for ok, _ in verdicts) else 1
    finally:
        redis_server.stop()
        drop_database(name)


def _row(s: dict[str, Any]) -> str:
    rss = " ".join(f"{value:.0f}" for value in s["rss_mb"].values())
    return (
        f"| {s['t']:>5} | {s['requests']:>8} | {s['failed']:>6} | {rss:>16} | {s['db_connections']:>6} "
        f"| {s['metrics_files']:>5} | {s['metrics_kb']:>7} |"
    )


def _verdicts(samples: list[dict], summary: dict, errors: list[str], metrics_ok: bool, args: Any) -> list:
    first, last = samples[0], samples[-1]
    first_rss, last_rss = sum(first["rss_mb"].values()), sum(last["rss_mb"].values())
    growth = (last_rss - first_rss) / first_rss if first_rss else 0.0
    pool_bound = args.workers * 10  # DB_POOL_SIZE 5 + DB_MAX_OVERFLOW 5 per worker
    peak_connections = max(s["db_connections"] for s in samples)
    return [
        (
            growth <= RSS_GROWTH_LIMIT,
            f"worker memory {first_rss:.0f} MB → {last_rss:.0f} MB in all ({growth:+.1%} after the first sample)",
        ),
        (
            peak_connections <= pool_bound and last["db_connections"] <= first["db_connections"] + args.workers,
            f"database connections {first['db_connections']} → {last['db_connections']} (peak {peak_connections},"
            f" pool bound {pool_bound})",
        ),
        (
            last["metrics_files"] == first["metrics_files"],
            f"metrics directory {first['metrics_files']} → {last['metrics_files']} files, "
            f"{first['metrics_kb']} → {last['metrics_kb']} KB; /metrics {'answers' if metrics_ok else 'FAILED'}",
        ),
        (
            not summary["client_errors"] and summary["reads_failed"] == 0 and summary["orders_gave_up"] == 0,
            f"{summary['requests']} requests, client errors {summary['client_errors'] or 'none'}",
        ),
        (not errors, f"5xx or exceptions in the app log: {len(errors)}"),
        (True, f"orders placed {summary['orders_created']}; invariants hold (checked in the database)"),
    ]


def _write_report(samples: list[dict], summary: dict, verdicts: list, args: Any) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Soak: {args.seconds:.0f} s, {args.workers} gunicorn workers, {args.readers} readers + {args.buyers} buyers",
        "",
        f"Run at {time.strftime('%Y-%m-%d %H:%M:%S')}: {summary['requests']} requests "
        f"({summary['requests'] / max(1.0, summary['seconds']):.0f}/s), {summary['orders_created']} orders.",
        "",
        "| t (s) | requests | failed | worker RSS (MB) | DB conns | metrics files | metrics KB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(s) for s in samples),
        "",
        *(f"- {'ok' if ok else 'NOT OK'}: {text}" for ok, text in verdicts),
        "",
    ]
    REPORT.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
