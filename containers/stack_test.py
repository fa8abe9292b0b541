"""The Compose stack, built and run for real, checked from outside as a customer and an operator.

    make stack-test        # .venv/bin/python containers/stack_test.py

Builds the images, starts docker-compose.yml (Docker Compose, or podman-compose with
docker-compose.debian.yml: containers/compose.sh picks), waits for every service's health, then
through Nginx over TLS: registers, logs in, browses, places an order and finds its confirmation
email in the SMTP sink; sees Prometheus scrape every target of monitoring/prometheus.yml and load
every alert rule; removes one of the two app containers while a bounded load runs and counts the
failed requests (there must be none). Then `down --volumes`, whatever happened.

Ports are published on loopback only, each a free high port (or STACK_<NAME>_PORT). The run is
bounded (STACK_TEST_SECONDS, default 840). Without a container engine it skips with the reason;
in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Stack, ensure_engine

PROJECT = "shopstack"
PORTS = ("SHOP_HTTP_PORT", "SHOP_HTTPS_PORT", "MAILPIT_PORT", "PROMETHEUS_PORT")
CONSOLE_PORTS = ("RABBITMQ_CONSOLE_PORT", "ALERTMANAGER_PORT", "GRAFANA_PORT")
T = TypeVar("T")


class Failed(AssertionError):
    pass


def log(message: str) -> None:
    print(f"[stack-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(what: str, probe: Callable[[], T | None], seconds: float, every: float = 2) -> T:
    """probe() until it returns something (not None) or `seconds` pass; then fail with `what`."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (requests.RequestException, ValueError, KeyError) as error:
            found, last = None, error
        if found is not None:
            return found
        time.sleep(every)
    raise Failed(f"{what}: not within {seconds:.0f}s (last error: {last})")


class Shop:
    """The stack from outside: Nginx's TLS port, the SMTP sink's inbox, Prometheus."""

    def __init__(self, ports: dict[str, int], cert: Path) -> None:
        self.base = f"https://127.0.0.1:{ports['SHOP_HTTPS_PORT']}"
        self.inbox = f"http://127.0.0.1:{ports['MAILPIT_PORT']}"
        self.prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
        self.cert = str(cert)

    def session(self, token: str | None = None) -> requests.Session:
        session = requests.Session()
        # Not the environment's CA bundle or proxies (which would win over `verify`): loopback only.
        session.trust_env = False
        session.verify = self.cert
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        return session

    def customer(self, name: str) -> tuple[requests.Session, dict[str, Any]]:
        """Register and log in: a session with the customer's token, and the customer."""
        anonymous = self.session()
        password = f"pw-{uuid.uuid4().hex}"
        user = {"username": name, "email": f"{name}@example.com", "password": password, "password2": password}
        registered = anonymous.post(f"{self.base}/api/users/", json=user, timeout=15)
        expect(registered.status_code == 201, f"register: {registered.status_code} {registered.text[:300]}")
        token = anonymous.post(f"{self.base}/api/token/", json={"username": name, "password": password}, timeout=15)
        expect(token.status_code == 200, f"log in: {token.status_code} {token.text[:300]}")
        return self.session(token.json()["access"]), registered.json()


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def journey(shop: Shop) -> None:
    """A customer's way through the shop, and the email that follows the order."""
    session, user = shop.customer(f"buyer{uuid.uuid4().hex[:10]}")
    listed = session.get(f"{shop.base}/api/products/", params={"in_stock": "true"}, timeout=15)
    expect(listed.status_code == 200 and listed.json(), f"browse: {listed.status_code} {listed.text[:300]}")
    product = listed.json()[0]
    detail = session.get(f"{shop.base}/api/products/{product['id']}/", timeout=15)
    expect(detail.status_code == 200 and detail.json()["id"] == product["id"], f"product page: {detail.status_code}")
    order = session.post(
        f"{shop.base}/api/orders/", json={"items": [{"product_id": product["id"], "quantity": 1}]}, timeout=15
    )
    expect(order.status_code == 201, f"order: {order.status_code} {order.text[:300]}")
    order_id = order.json()["id"]
    log(f"ok: {user['username']} registered, logged in, browsed and placed order #{order_id}")

    subject = f"Order Confirmation - Order #{order_id}"

    def arrived() -> dict[str, Any] | None:
        messages = shop.session().get(f"{shop.inbox}/api/v1/messages", timeout=5).json()["messages"]
        return next((m for m in messages if m["Subject"] == subject), None)

    email = eventually(f"the email {subject!r} in the SMTP sink", arrived, seconds=90)
    recipients = [to["Address"] for to in email["To"]]
    expect(recipients == [user["email"]], f"the confirmation went to {recipients}, not {user['email']}")
    expect(product["name"] in email["Snippet"], f"the email does not list {product['name']!r}: {email['Snippet']!r}")
    log(f"ok: {subject!r} arrived for {user['email']}")


def monitoring(shop: Shop) -> None:
    """Prometheus scrapes every job of prometheus.yml, every target up, and loads every rule."""
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    rules = yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text())
    alert_names = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}

    def all_up() -> dict[str, int] | None:
        targets = shop.session().get(f"{shop.prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        up = Counter(target["labels"]["job"] for target in targets if target["health"] == "up")
        down = [target["scrapeUrl"] for target in targets if target["health"] != "up"]
        return dict(up) if set(up) == jobs and not down and up["shop"] == 2 else None

    scraped = eventually(f"Prometheus scraping every job of {sorted(jobs)}, every target up", all_up, seconds=120)
    log(f"ok: Prometheus scrapes every target: {scraped}")

    groups = shop.session().get(f"{shop.prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"}
    expect(loaded == alert_names, f"alert rules loaded {sorted(loaded)} != alerts.yml {sorted(alert_names)}")
    unhealthy = [
        rule["name"] for group in groups for rule in group["rules"] if rule.get("health") not in (None, "ok", "unknown")
    ]
    expect(not unhealthy, f"rules that fail to evaluate: {unhealthy}")
    log(f"ok: Prometheus loaded all {len(loaded)} alert rules")


class Load:
    """Customers reading their orders and product pages (past the micro-cache), bounded in time."""

    def __init__(self, sessions: list[requests.Session], shop: Shop, product_id: int, seconds: float) -> None:
        self.sessions, self.shop, self.product_id = sessions, shop, product_id
        self.deadline = time.monotonic() + seconds
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.started: dict[str, float] = {}  # request id: when it was sent
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(session,), daemon=True) for session in sessions]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def run(self, session: requests.Session) -> None:
        paths = ["/api/orders/", f"/api/products/{self.product_id}/"]
        index = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            path = paths[index % len(paths)]
            index += 1
            request_id = f"load-{uuid.uuid4().hex}"
            with self.lock:
                self.started[request_id] = time.monotonic()
            try:
                headers = {"Cache-Control": "no-cache", "X-Request-ID": request_id}
                answer = session.get(f"{self.shop.base}{path}", headers=headers, timeout=15)
                outcome = str(answer.status_code)
            except requests.RequestException as error:
                outcome = type(error).__name__
            with self.lock:
                self.outcomes[outcome] += 1
                if outcome != "200":
                    self.failures.append(f"{path}: {outcome}")
            time.sleep(0.15)  # about 6 requests a second per customer: inside the per-user rate limit

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def remove_a_replica(stack: Stack, shop: Shop) -> None:
    """One app container stopped and removed under load: Nginx sends everything to the other."""
    replicas = stack.containers("app", every=False)
    expect(len(replicas) == 2, f"two app containers running, found {replicas}")
    sessions = [shop.customer(f"reader{uuid.uuid4().hex[:10]}")[0] for _ in range(3)]
    product = sessions[0].get(f"{shop.base}/api/products/", timeout=15).json()[0]
    load = Load(sessions, shop, product["id"], seconds=120)
    load.start()
    try:
        time.sleep(5)
        before = sum(load.outcomes.values())
        victim = replicas[-1]
        log(f"removing {victim} under load ({before} requests so far)")
        subprocess.run([stack.engine, "stop", "--time", "30", victim], check=True, capture_output=True, timeout=90)  # noqa: S603
        subprocess.run([stack.engine, "rm", victim], check=True, capture_output=True, timeout=60)  # noqa: S603
        removed_at, removed_count = time.monotonic(), sum(load.outcomes.values())
        time.sleep(15)  # past Nginx's resolver validity (5 s): it asks again and finds one replica
    finally:
        load.finish()
    total = sum(load.outcomes.values())
    after = total - removed_count
    log(f"load: {total} requests, {dict(load.outcomes)}; {after} after the removal")
    expect(not load.failures, f"{len(load.failures)} failed requests: {load.failures[:10]}")
    expect(after > 50, f"only {after} requests after the removal: the load stalled")
    expect(stack.containers("app", every=False) == replicas[:-1], "the other app container is still running")
    log(f"ok: {victim} removed under load, 0 failed requests of {total}")
    # Re-resolved, not merely retried: once the resolver's answer expired, Nginx's access log shows
    # every request going straight to the remaining replica (one upstream address, no failed try).
    (survivor,) = replicas[:-1]
    address = stack.address(survivor)
    late = {request_id for request_id, sent in load.started.items() if sent > removed_at + 8}
    upstreams = Counter(
        entry["upstream"]
        for container in stack.containers("nginx", every=False)
        for entry in stack.json_logs(container)
        if entry.get("request_id") in late
    )
    expect(
        sum(upstreams.values()) >= len(late) * 0.9 and set(upstreams) == {f"{address}:8000"},
        f"requests after the removal went to {dict(upstreams)}, not only {survivor} at {address}:8000",
    )
    log(f"ok: Nginx re-resolved `app`: the last {sum(upstreams.values())} requests all went to {address}:8000")


def seed(stack: Stack) -> None:
    (app, *_) = stack.containers("app", every=False)
    subprocess.run(  # noqa: S603
        [
            stack.engine,
            "exec",
            app,
            "flask",
            "--app",
            "wsgi",
            "seed",
            "--categories",
            "2",
            "--products",
            "20",
            "--if-empty",
        ],
        check=True,
        timeout=120,
    )


def run(stack: Stack, ports: dict[str, int], cert: Path) -> None:
    started = time.monotonic()
    log(f"building the images and starting the stack ({stack.engine}); ports {ports}")
    stack.up(build=True)
    log(f"ok: every service up and healthy after {time.monotonic() - started:.0f}s")
    shop = Shop(ports, cert)
    health = shop.session().get(f"{shop.base}/healthz", timeout=15)
    expect(health.status_code == 200, f"/healthz through Nginx: {health.status_code}")
    seed(stack)
    journey(shop)
    monitoring(shop)
    remove_a_replica(stack, shop)


def main() -> int:
    seconds = int(os.environ.get("STACK_TEST_SECONDS", "840"))
    in_ci = os.environ.get("CI") == "true"
    engine = ensure_engine()
    if engine is None:
        reason = "no container engine (Docker with Compose, or Podman with podman-compose) can be had here"
        if in_ci:
            print(f"stack-test: FAILED: {reason}", file=sys.stderr)
            return 1
        print(f"stack-test: SKIPPED: {reason}")
        return 0

    def out_of_time(signum: int, frame: object) -> None:
        raise Failed(f"the stack test ran out of its {seconds}s (or was stopped: signal {signum})")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.signal(signal.SIGTERM, out_of_time)
    signal.alarm(seconds)
    started = time.monotonic()
    ports = {name: int(os.environ.get(f"STACK_{name}", free_port())) for name in PORTS + CONSOLE_PORTS}
    with tempfile.TemporaryDirectory(prefix="shop-stack-") as scratch:
        env_file = Path(scratch) / "stack.env"
        cert_dir = ROOT / "nginx" / "certs"
        subprocess.run([str(ROOT / "containers" / "prepare.sh"), str(env_file), str(cert_dir)], check=True, timeout=60)  # noqa: S603
        os.environ.update({name: str(port) for name, port in ports.items()})
        os.environ.update(SHOP_ENV_FILE=str(env_file), SHOP_PUBLISH_ADDRESS="127.0.0.1")
        stack = Stack(project=PROJECT, env_file=env_file, engine=engine)
        failed = False
        try:
            stack.down(volumes=True)  # what a stopped earlier run may have left
            run(stack, ports, cert_dir / "fullchain.pem")
        except (Failed, subprocess.SubprocessError, requests.RequestException, RuntimeError) as error:
            failed = True
            print(f"stack-test: FAILED: {error}", file=sys.stderr)
            for service in ("nginx", "app", "worker", "prometheus"):
                for container in stack.containers(service):
                    print(f"--- {container}{stack.logs(container, lines=30)}", file=sys.stderr)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            log("down --volumes")
            try:
                stack.down(volumes=True)
            except subprocess.SubprocessError as error:
                print(f"stack-test: down failed: {error}", file=sys.stderr)
                failed = True
    elapsed = time.monotonic() - started
    print(f"stack-test: {'FAILED' if failed else 'passed'} in {elapsed:.0f}s")
    print("0 passed, 1 failed" if failed else "1 passed, 0 failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
