"""`make fuzz`: Schemathesis against the live API, as a customer and as staff; zero failures or exit 1.

It makes a fresh database (FUZZ_DATABASE_URL, else a temporary SQLite file), migrates it, seeds a
small catalog, a customer with orders and a staff user, serves the app with gunicorn on a free
loopback port (production settings, rate limits off) and runs `schemathesis run` on
/api/openapi.json once per user: every check (response headers and schemas included), every phase
(examples, coverage, fuzzing, and the stateful phase that follows the document's links), and a
bounded number of examples per operation. Each run's JSON report is kept in FUZZ_REPORT_DIR
(default reports/fuzz).

Each run draws a new seed, and prints it first; the same seed (and the same catalog, which `flask
seed` makes the same every time) generates the same requests again. One Schemathesis worker, so
that it does: with two, the operations share out differently each run (and it is barely faster).

    .venv/bin/python -m tests.security.fuzz [--max-examples 25] [--seed N] [--workers 1]
    FUZZ_SEED=N make fuzz        # a failure's run again
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "fuzz-pass-word-1"  # a throwaway account in a throwaway database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(database_url: str, jwt_secret: str, workdir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
    env.update(
        APP_ENV="production",
        SECRET_KEY=secrets.token_hex(32),
        JWT_SECRET_KEY=jwt_secret,
        DATABASE_URL=database_url,
        RATELIMIT_ENABLED="false",
        PASSWORD_HASH_METHOD="pbkdf2:sha256:1000",
        LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        WORKER_METRICS_PORT="0",
    )
    env.pop("CELERY_BROKER_URL", None)  # order emails are sent in-process (logged: no SMTP server)
    env.pop("MAIL_SERVER", None)
    (workdir / "metrics").mkdir(exist_ok=True)
    return env


def flask(env: dict[str, str], *args: str) -> str:
    command = [str(BIN / "flask"), "--app", "wsgi", *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        sys.exit(f"fuzz: `flask {' '.join(args)}` failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**env, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2"}
    command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"fuzz: gunicorn exited:\n{log.read_text()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass  # not listening yet, or a worker still booting
        time.sleep(0.2)
    server.terminate()
    sys.exit(f"fuzz: gunicorn did not become ready:\n{log.read_text()}")


def user_id(base: str, username: str) -> str:
    response = requests.post(f"{base}/api/token/", json={"username": username, "password": PASSWORD}, timeout=10)
    response.raise_for_status()
    payload = response.json()["access"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


def seed_through_the_api(base: str, env: dict[str, str]) -> dict[str, str]:
    """A customer (registered as a client would) with two orders, and a staff user; their ids."""
    flask(env, "create-admin", "fuzzstaff", "--email", "staff@fuzz.example", "--password", PASSWORD)
    registration = {
        "username": "fuzzcustomer",
        "email": "customer@fuzz.example",
        "password": PASSWORD,
        "password2": PASSWORD,
    }
    requests.post(f"{base}/api/users/", json=registration, timeout=10).raise_for_status()
    ids = {"customer": user_id(base, "fuzzcustomer"), "staff": user_id(base, "fuzzstaff")}
    token = requests.post(
        f"{base}/api/token/", json={"username": "fuzzcustomer", "password": PASSWORD}, timeout=10
    ).json()["access"]
    products = requests.get(f"{base}/api/products/?page_size=3", timeout=10).json()
    for product in products[:2]:
        order = {"items": [{"product_id": product["id"], "quantity": 1}]}
        headers = {"Authorization": f"Bearer {token}"}
        requests.post(f"{base}/api/orders/", json=order, headers=headers, timeout=10).raise_for_status()
    return ids


def run_schemathesis(base: str, role: str, ids: dict[str, str], jwt_secret: str, args: Any, reports: Path) -> Any:
    report = reports / f"{role}.json"
    command = [
        str(BIN / "schemathesis"),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{base}/api/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(args.seed),
        "--max-examples",
        str(args.max_examples),
        "--workers",
        str(args.workers),
        "--request-timeout",
        "10",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.security.fuzz_hooks",
        "PYTHONPATH": str(ROOT),
        "FUZZ_USER_ID": ids[role],
        "FUZZ_JWT_SECRET": jwt_secret,
    }
    print(f"\n== schemathesis as the {role} (user id {ids[role]})", flush=True)
    result = subprocess.run(command, cwd=ROOT, env=env, timeout=args.timeout, check=False)
    return result.returncode, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_MAX_EXAMPLES", "25")))
    parser.add_argument(
        "--seed",
        type=int,
        default=int(os.environ.get("FUZZ_SEED") or secrets.randbelow(2**32)),
        help="Default: random.",
    )
    parser.add_argument("--workers", type=int, default=int(os.environ.get("FUZZ_WORKERS", "1")))
    parser.add_argument("--timeout", type=int, default=600, help="Seconds each schemathesis run may take.")
    parser.add_argument("--roles", default="customer,staff")
    args = parser.parse_args()
    print(f"== fuzz seed {args.seed}: run it again with FUZZ_SEED={args.seed} make fuzz", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="shop-fuzz-"))
    reports = Path(os.environ.get("FUZZ_REPORT_DIR", ROOT / "reports" / "fuzz"))
    reports.mkdir(parents=True, exist_ok=True)
    database_url = os.environ.get("FUZZ_DATABASE_URL") or f"sqlite:///{workdir / 'fuzz.sqlite3'}"
    jwt_secret = secrets.token_hex(32)
    env = server_env(database_url, jwt_secret, workdir)
    flask(env, "db", "upgrade")
    flask(env, "seed", "--categories", "3", "--products", "20")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(env, port, reports / "gunicorn.log")
    codes = {}
    try:
        ids = seed_through_the_api(base, env)
        for role in args.roles.split(","):
            codes[role], _ = run_schemathesis(base, role, ids, jwt_secret, args, reports)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=40)
    print("\n== fuzz:", ", ".join(f"{role} exit {code}" for role, code in codes.items()), f"(seed {args.seed})")
    return 0 if codes and not any(codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
