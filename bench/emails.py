"""Confirmation emails per minute, from order commit to message in an SMTP server.

Places ORDERS orders through the API (their outbox rows published to RabbitMQ by the relay,
which `celery beat` runs every OUTBOX_RELAY_SECONDS), with a real Celery worker sending to an
SMTP server this script runs, and reports throughput and latency.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/shop_bench \
    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/shop_bench \
    .venv/bin/python bench/emails.py --orders 1000 --concurrency 2
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_jwt_extended import create_access_token  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from shop import create_app  # noqa: E402
from shop.extensions import db  # noqa: E402
from tests.factories import make_category, make_product, make_user  # noqa: E402
from tests.smtp import MailSink, SMTPServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--backlog", action="store_true", help="place every order first, then start the worker: its drain rate"
    )
    args = parser.parse_args()
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
        if not os.environ.get(name):
            sys.exit(f"{name} must name the benchmark's own PostgreSQL database and RabbitMQ vhost")

    sink = MailSink()
    with SMTPServer(sink) as smtp:
        env = {**os.environ, "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp.port), "LOG_LEVEL": "warning"}
        os.environ.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp.port))
        app = create_app({"RATELIMIT_ENABLED": False, "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"})
        with app.app_context():
            upgrade()
            category = make_category(name=f"Bench {time.time_ns()}")
            products = [make_product(category, stock=10**9).id for _ in range(2)]
            buyer = make_user(username=f"bench{time.time_ns()}", email=f"bench{time.time_ns()}@example.com")
            headers = {"Authorization": f"Bearer {create_access_token(identity=buyer.id)}"}
            db.session.remove()
        app.extensions["celery"].control.purge()

        client = app.test_client()
        committed: dict[int, float] = {}
        items = [{"product_id": pid, "quantity": 1} for pid in products]

        def place_orders() -> float:
            started = time.monotonic()
            for _ in range(args.orders):
                response = client.post("/api/orders/", json={"items": items}, headers=headers)
                assert response.status_code == 201, response.get_json()
                committed[response.get_json()["id"]] = time.monotonic()
            return time.monotonic() - started

        placed = place_orders() if args.backlog else 0.0
        log = Path(tempfile.mkstemp(prefix="shop-bench-worker-", suffix=".log")[1])
        command = [sys.executable, "-m", "celery", "-A", "celery_worker", "worker", "-c", str(args.concurrency)]
        command += ["--without-gossip", "--without-mingle", "-l", "info"]
        schedule = log.with_suffix(".schedule")
        beat_command = [sys.executable, "-m", "celery", "-A", "celery_worker", "beat", "--schedule", str(schedule)]
        with log.open("wb") as out:
            worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            beat = subprocess.Popen(beat_command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while "ready." not in log.read_text(errors="replace"):
                time.sleep(0.1)
            ready = time.monotonic()
            if not args.backlog:
                placed = place_orders()
            deadline = time.monotonic() + 600
            while len(sink.received) < args.orders and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for process in (beat, worker):
                process.terminate()
                process.wait(30)

    arrived = {int(re.search(r"#(\d+)", m["Subject"]).group(1)): m for m in sink.received}
    latencies = sorted(sink_time - committed[oid] for oid, sink_time in _arrival_times(sink, arrived).items())
    first = ready if args.backlog else min(committed.values())
    span = max(_arrival_times(sink, arrived).values()) - first
    print(f"orders placed: {args.orders} in {placed:.1f}s ({args.orders / placed:.0f}/s)")
    print(f"emails received: {len(sink.received)} (distinct orders {len(arrived)}), SMTP attempts {sink.attempts}")
    since = "worker ready" if args.backlog else "first commit"
    print(f"throughput: {len(arrived) / span * 60:.0f} emails/minute, {since} to last email {span:.1f}s")
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"commit to email: p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")


def _arrival_times(sink: MailSink, arrived: dict) -> dict[int, float]:
    return {oid: float(message["X-Received-At"]) for oid, message in arrived.items()}


if __name__ == "__main__":
    main()
