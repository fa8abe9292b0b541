#!/usr/bin/env python3
"""Measure gunicorn's sync and gthread workers behind Nginx (upstream keep-alive) with wrk.

    .venv/bin/python deploy/measure_worker_class.py --database-url postgresql://postgres@127.0.0.1:5432/shop_ops \\
        --redis-url redis://127.0.0.1:6379/2

Starts, on loopback, two gunicorn instances with the project's gunicorn.conf.py (each with
WEB_CONCURRENCY workers, default 2 x cores + 1) behind Nginx rendered from nginx/render.py, for each
worker class in turn (`--variants`), and runs wrk through Nginx's TLS port on a liveness GET and an authenticated
product list page sent with `Cache-Control: no-cache`, which skips the micro-cache (a token no longer
does: the catalog ignores it), so the app answers every request. Rounds
alternate between the classes; the medians are printed as a Markdown table. The database must be
migrated and seeded (`flask db upgrade`, `flask seed`). Everything stops when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "nginx"))
import render  # noqa: E402 - nginx/render.py, a script beside the template


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback http only
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {seconds}s")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    output = log.open("wb")
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wrk(url: str, seconds: int, connections: int, headers: list[str]) -> tuple[float, float]:
    """(requests per second, p99 latency in ms) from wrk --latency."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for header in headers:
        command += ["-H", header]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 30, check=True).stdout  # noqa: S603
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p99


def token(base: str, cert: Path) -> str:
    import json
    import ssl

    context = ssl.create_default_context(cafile=str(cert))

    def post(path: str, body: dict[str, str]) -> dict[str, str]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            return {"status": str(error.code)}

    user = {"username": "wrk_measure", "password": "measure-workers-1", "password2": "measure-workers-1"}
    post("/api/users/", {**user, "email": "wrk_measure@example.com"})
    return post("/api/token/", {"username": user["username"], "password": user["password"]})["access"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["sync", "gthread:4"],
        help="worker classes to compare: sync, gthread:THREADS, optionally @WORKERS (e.g. gthread:4@2)",
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (apt-get install {tool})")

    work = Path(tempfile.mkdtemp(prefix="shop-measure-"))
    work.chmod(0o755)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        subprocess.run(["sh", str(ROOT / "nginx/make-cert.sh"), str(work / "tls")], check=True, capture_output=True)  # noqa: S603, S607
        for round_number in range(args.rounds):
            for worker_class in args.variants:
                kind, _, rest = worker_class.partition(":")
                threads, _, workers = rest.partition("@")
                ports = [free_port(), free_port()]
                env = {
                    **os.environ,
                    "DATABASE_URL": args.database_url,
                    "REDIS_URL": args.redis_url,
                    "GUNICORN_WORKER_CLASS": kind,
                    "GUNICORN_THREADS": threads or "4",
                    "RATELIMIT_ANON": "1000000/minute",
                    "RATELIMIT_USER": "1000000/minute",
                    "LOG_LEVEL": "WARNING",
                }
                if workers:
                    env["WEB_CONCURRENCY"] = workers
                apps = []
                for port in ports:
                    metrics = work / f"metrics-{worker_class}-{round_number}-{port}"
                    apps.append(
                        start(
                            [str(ROOT / ".venv/bin/gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                            {**env, "BIND": f"127.0.0.1:{port}", "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
                            work / f"gunicorn-{port}.log",
                        )
                    )
                nginx = None
                try:
                    for port in ports:
                        wait_http(f"http://127.0.0.1:{port}/healthz")
                    https = free_port()
                    prefix = work / f"nginx-{worker_class}-{round_number}"
                    prefix.mkdir()
                    prefix.chmod(0o755)
                    config = prefix / "nginx.conf"
                    config.write_text(
                        render.render(
                            user="nobody nogroup" if os.geteuid() == 0 else None,
                            prefix=str(prefix),
                            http_listen=f"127.0.0.1:{free_port()}",
                            https_listen=f"127.0.0.1:{https}",
                            status_listen=f"127.0.0.1:{free_port()}",
                            cert=str(work / "tls/fullchain.pem"),
                            key=str(work / "tls/privkey.pem"),
                            upstream=[f"127.0.0.1:{port}" for port in ports],
                            access_log="off",
                            rate=1_000_000,
                            burst=1_000_000,
                        ).replace("access_log off shop_json;", "access_log off;")
                    )
                    nginx = start(
                        ["nginx", "-p", str(prefix), "-c", str(config), "-g", "daemon off;"], env, prefix / "out.log"
                    )
                    base = f"https://127.0.0.1:{https}"
                    time.sleep(1)
                    bearer = token(base, work / "tls/fullchain.pem")
                    scenarios = {
                        "GET /healthz": (f"{base}/healthz", []),
                        "GET /api/products/ (authenticated)": (
                            f"{base}/api/products/?page_size=20",
                            [f"Authorization: Bearer {bearer}", "Cache-Control: no-cache"],
                        ),
                    }
                    for name, (url, headers) in scenarios.items():
                        wrk(url, 2, args.connections, headers)  # warm up
                        result = wrk(url, args.seconds, args.connections, headers)
                        results.setdefault((name, worker_class), []).append(result)
                        rps, p99 = result
                        print(f"round {round_number + 1} {worker_class:11} {name}: {rps:.0f} req/s, p99 {p99:.1f} ms")
                finally:
                    if nginx:
                        stop(nginx)
                    for app in apps:
                        stop(app)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n| scenario | worker class | req/s (median of {args.rounds}) | p99 ms (median) |")
    print("|---|---|---|---|")
    for (name, worker_class), runs in results.items():
        rps = statistics.median(run[0] for run in runs)
        p99 = statistics.median(run[1] for run in runs)
        print(f"| {name} | {worker_class} | {rps:.0f} | {p99:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
