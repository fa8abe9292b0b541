"""`make bench`: the shop against this machine's own ceilings, every figure a ratio taken in the same run.

    .venv/bin/python bench/run.py                 # full run, writes docs/performance.md and its chart
    .venv/bin/python bench/run.py --seconds 3 --rounds 1 --mix-seconds 10 --mix-connections 1000  # smoke
    .venv/bin/python bench/run.py --profile       # py-spy on the shop's workers under each direct scenario

Starts on loopback, and stops when it ends (also on Ctrl-C): a PostgreSQL database of its own
(`shop_bench_run_<pid>`, migrated, 10,000 products in 20 categories by `flask seed`), keys under
its own prefix in Redis db 8 (its own redis-server when none answers), a RabbitMQ vhost when
`rabbitmqctl` works (else the email task runs in-process), and:
- the shop on gunicorn with the production config (APP_ENV=production, generated secrets, every
  extension on, rate limits raised far above the load): instance A with the catalog cache,
  instance B with it off (CATALOG_CACHE=false), both behind Nginx rendered by nginx/render.py;
- the ceilings: bench/ceiling_app.py on the same gunicorn settings (the list page's bytes from
  Redis; the same page by plain psycopg2), Nginx serving those bytes as a static file, and
  pgbench running the order's SQL (bench/order_transaction.sql, 16 clients).
Each scenario runs wrk (-t2 -c32, --seconds a round) next to its ceiling, `--rounds` times
interleaved; then the flash sale (bench/flash_sale.py); then --mix-connections shoppers through
Nginx for --mix-seconds (bench/mix.py, bench/mix.lua).

The parts: bench/common.py (sizes, tools), bench/services.py (database, Redis, broker, buyers),
bench/stack.py (the servers), bench/measure.py (a scenario next to its ceiling), bench/flash_sale.py,
bench/mix.py, bench/profiling.py, bench/report.py (tables, chart, docs/performance.md); this file
runs them in order and writes the report.
Environment: BENCH_SECONDS, BENCH_ROUNDS, BENCH_MIX_SECONDS, BENCH_MIX_CONNECTIONS, BENCH_MIX_RATE,
BENCH_REDIS_URL (default redis://127.0.0.1:6379/8), BENCH_BROKER (auto|none), PGHOST, PGPORT, PGUSER,
WEB_CONCURRENCY.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import flash_sale
from bench.common import (
    CATEGORIES,
    MICRO_CACHE_SECONDS,
    PRODUCTS,
    ROOT,
    ensure_tools,
    load_average,
    log,
    raise_open_files,
)
from bench.measure import run_groups
from bench.mix import mix_section, run_mix
from bench.profiling import profile
from bench.report import (
    Measure,
    chart,
    done_when_section,
    markdown_table,
    rows_of,
    sale_section,
    terminal_table,
    write_markdown,
)
from bench.services import Postgres, broker, delete_keys, make_buyers, prepare_database, redis_db, shop_env
from bench.stack import Stack, prime_caches, start_stack, workers


def serve(stack: Stack, buyers: list[tuple[int, str]], seconds: float) -> None:
    """Keep the stack up for manual runs (wrk, py-spy) and print how to reach it."""
    info: dict[str, Any] = {key: value for key, value in vars(stack).items() if isinstance(value, str)}
    info["masters"] = [server.pid for server in stack.servers if server.name.startswith(("gunicorn", "ceiling"))]
    info["token"] = buyers[0][1]
    print(json.dumps(info, indent=2), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(seconds)


# Report


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {system}, Python {platform.python_version()}"


def write_report(
    measures: list[Measure],
    mix: dict[str, Any] | None,
    sale: dict[str, Any] | None,
    args: argparse.Namespace,
    context: dict[str, Any],
) -> None:
    rows = rows_of(measures)
    print()
    print(terminal_table(rows))
    print()
    print(sale_section(sale))
    if mix:
        print()
        print(mix_section(mix))
    print()
    print(done_when_section(rows, mix, sale))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    chart_path = ROOT / "docs" / "performance.png"
    chart_path.parent.mkdir(exist_ok=True)
    chart(rows, chart_path, f"shop vs its ceilings, {stamp}, {context['machine'].split(' (')[0]}")
    generated = "\n".join(
        [
            f"Last run: {stamp}, `{context['command']}` — {context['machine']}; gunicorn "
            f"{workers()} sync workers per instance; wrk -t2 -c32, {args.seconds:g} s a round, "
            f"{args.rounds} round(s) interleaved with the ceilings (req/s and p50 averaged, p99 the worst round); "
            f"email task {context['broker']}. Load average (1 min) at the start {context['load_start']:.1f}, "
            f"at the end {load_average():.1f}: other work on the machine shares the cores, so compare ratios.",
            "",
            markdown_table(rows),
            "",
            "![each scenario as a share of its ceiling](performance.png)",
            "",
            f"Nginx keeps a catalog page {MICRO_CACHE_SECONDS} s; every product page has its copy before the "
            "micro-cache runs, which start after the copies expired: each run includes refreshing every page once.",
            "",
            "### Flash sale: one hot product",
            "",
            sale_section(sale),
            "",
            "### 10,000 connections",
            "",
            mix_section(mix),
            "",
            "### The issue's targets, this run",
            "",
            done_when_section(rows, mix, sale),
        ]
    )
    write_markdown(ROOT / "docs" / "performance.md", generated)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    payload = {"context": context, "measures": [asdict(m) for m in measures], "mix": mix, "sale": sale}
    (results / "latest.json").write_text(json.dumps(payload, indent=2, default=str))
    log("wrote docs/performance.md, docs/performance.png and bench/results/latest.json")


# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(env("BENCH_SECONDS", "5")), help="a wrk run")
    parser.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "2")), help="rounds per scenario")
    parser.add_argument("--mix-seconds", type=float, default=float(env("BENCH_MIX_SECONDS", "60")))
    parser.add_argument("--mix-connections", type=int, default=int(env("BENCH_MIX_CONNECTIONS", "10000")))
    parser.add_argument("--mix-rate", type=int, default=int(env("BENCH_MIX_RATE", "1600")), help="offered req/s")
    parser.add_argument("--no-sale", action="store_true", help="leave out the flash sale")
    parser.add_argument("--only", help="run only the scenario groups whose ceiling name contains this")
    parser.add_argument("--profile", action="store_true", help="py-spy the direct scenarios instead of measuring")
    parser.add_argument("--serve", type=float, default=0, help="start the stack, print it, keep it up N seconds")
    parser.add_argument("--no-report", action="store_true", help="print the table, leave docs/ alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tools = ensure_tools()
    open_files = raise_open_files()
    if args.mix_seconds and open_files < args.mix_connections + 1000:
        sys.exit(f"bench: only {open_files} open files allowed; {args.mix_connections} connections need more")
    context: dict[str, Any] = {
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]).strip(),
        "machine": machine(),
        "load_start": load_average(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    log(f"{context['machine']}; load average {context['load_start']:.1f}")
    run_id = str(os.getpid())
    prefix = f"bench{run_id}:"
    pg = Postgres()
    work = Path(tempfile.mkdtemp(prefix="shop-bench-"))
    work.chmod(0o755)
    stack = Stack()
    started = time.monotonic()
    try:
        with redis_db(work) as redis_url, broker(run_id) as broker_url:
            context["broker"] = "published to RabbitMQ" if broker_url else "run in-process (no RabbitMQ)"
            secrets_ = {"SECRET_KEY": secrets.token_urlsafe(32), "JWT_SECRET_KEY": secrets.token_urlsafe(32)}
            env = shop_env(pg, redis_url, prefix, broker_url, secrets_)
            log(f"database {pg.name}: migrate, seed {PRODUCTS:,} products in {CATEGORIES} categories")
            pg.create()
            prepare_database(pg, env, work)
            buyers = make_buyers(pg, secrets_["JWT_SECRET_KEY"], flash_sale.BUYERS)
            try:
                start_stack(stack, env, redis_url, pg, work, f"{prefix}bench:page", tools)
                prime_caches(stack)
                token = buyers[0][1]
                if args.serve:
                    serve(stack, buyers, args.serve)
                    return 0
                if args.profile:
                    profile(stack, tools, token, args.seconds, ROOT / "reports" / "profile")
                    return 0
                measures = run_groups(stack, tools, pg, buyers, args, work)
                sale = None if args.no_sale else flash_sale.run_sale(stack, tools, pg, buyers, args, work)
                mix = run_mix(stack, tools, buyers, args) if args.mix_seconds > 0 else None
                if not args.no_report:
                    write_report(measures, mix, sale, args, context)
                else:
                    print(terminal_table(rows_of(measures)))
                    print(sale_section(sale))
                    if mix:
                        print(mix_section(mix))
                        print(mix["wrk"])
            finally:
                for server in reversed(stack.servers):
                    server.stop()
                delete_keys(redis_url, prefix)
    finally:
        pg.drop()
        shutil.rmtree(work, ignore_errors=True)
        log(f"stopped everything it started ({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
