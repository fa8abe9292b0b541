"""`make loadtest`: locustfile.py headless for a bounded time, with Locust's HTML report and CSVs in reports/.

    .venv/bin/python bench/loadtest.py                          # starts the local stack, 200 users, 60 s
    .venv/bin/python bench/loadtest.py --users 1000 --spawn-rate 50 --seconds 120 --processes -1
    .venv/bin/python bench/loadtest.py --host https://shop.example   # an existing deployment

Without --host it starts, on loopback, what `make bench` starts for the shop: a PostgreSQL database
of its own with 10,000 products in 20 categories, keys under its own prefix in Redis db 8, gunicorn
with the production config, Nginx (TLS) in front, with rate limits raised (every user comes from
127.0.0.1); and it stops them when Locust ends. Reports: reports/loadtest/report.html and
reports/loadtest/loadtest_*.csv.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RAISED_LIMIT, VENV_BIN, ensure_tools, log, raise_open_files  # noqa: E402
from bench.services import Postgres, broker, delete_keys, prepare_database, redis_db, shop_env  # noqa: E402
from bench.stack import render_nginx, workers  # noqa: E402
from tests.ops_processes import free_port, gunicorn_env, start_gunicorn, start_nginx  # noqa: E402

REPORTS = ROOT / "reports" / "loadtest"


def run_locust(host: str, args: argparse.Namespace) -> int:
    REPORTS.mkdir(parents=True, exist_ok=True)
    command = [str(VENV_BIN / "locust"), "-f", str(ROOT / "locustfile.py"), "--headless", "--host", host]
    command += ["-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.seconds}s", "--stop-timeout", "10"]
    command += ["--html", str(REPORTS / "report.html"), "--csv", str(REPORTS / "loadtest"), "--only-summary"]
    if args.processes:
        command += ["--processes", str(args.processes)]
    log(f"locust: {args.users} users, {args.spawn_rate}/s spawn rate, {args.seconds} s against {host}")
    env = {**os.environ, "LOAD_USER_PREFIX": os.environ.get("LOAD_USER_PREFIX", f"load-{secrets.token_hex(3)}-")}
    code = subprocess.run(command, cwd=ROOT, env=env, check=False, timeout=args.seconds + 300).returncode
    log(f"reports: {REPORTS / 'report.html'}, {REPORTS}/loadtest_stats.csv (locust exit code {code})")
    return code


def local_stack(args: argparse.Namespace) -> int:
    """The shop behind Nginx on loopback for the length of the test."""
    tools = ensure_tools()
    raise_open_files()
    pg = Postgres(name=f"shop_bench_load_{os.getpid()}")
    prefix = f"load{os.getpid()}:"
    work = Path(tempfile.mkdtemp(prefix="shop-loadtest-"))
    work.chmod(0o755)
    servers = []
    try:
        with redis_db(work) as redis_url, broker(str(os.getpid())) as broker_url:
            secrets_ = {"SECRET_KEY": secrets.token_urlsafe(32), "JWT_SECRET_KEY": secrets.token_urlsafe(32)}
            env = shop_env(pg, redis_url, prefix, broker_url, secrets_)
            env["RATELIMIT_AUTH"] = RAISED_LIMIT  # every user signs up and in from 127.0.0.1
            log(f"database {pg.name}: migrate and seed")
            pg.create()
            prepare_database(pg, env, work)
            try:
                port = int(os.environ.get("LOADTEST_APP_PORT") or 0) or free_port()
                app_env = gunicorn_env(pg.url.replace("postgresql://", "postgresql+psycopg2://"), work / "m", **env)
                servers.append(start_gunicorn(port, workers(), app_env, work / "gunicorn.log"))
                nginx_prefix = work / "nginx"
                nginx_prefix.mkdir(mode=0o755)
                config, https = render_nginx(nginx_prefix, f"127.0.0.1:{port}", None)
                servers.append(start_nginx(tools["nginx"], nginx_prefix, config, [https]))
                return run_locust(f"https://127.0.0.1:{https}", args)
            finally:
                for server in reversed(servers):
                    server.stop()
                delete_keys(redis_url, prefix)
    finally:
        pg.drop()
        shutil.rmtree(work, ignore_errors=True)
        log("stopped everything it started")


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=env("LOADTEST_HOST") or None, help="target URL (default: a local stack)")
    parser.add_argument("--users", type=int, default=int(env("USERS") or 200))
    parser.add_argument("--spawn-rate", type=float, default=float(env("SPAWN_RATE") or 20))
    parser.add_argument("--seconds", type=int, default=int(env("DURATION") or 60))
    parser.add_argument("--processes", type=int, default=int(env("PROCESSES") or 0), help="-1: one per core")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.host:
        return run_locust(args.host, args)
    return local_stack(args)


if __name__ == "__main__":
    sys.exit(main())
