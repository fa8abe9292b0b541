"""Confirmation emails: one per committed order, through a real worker, beat, broker and SMTP server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask_jwt_extended import create_access_token
from sqlalchemy import select

from shop import create_app
from shop.config import celery_config
from shop.extensions import db
from shop.orders.models import EmailOutbox
from tests.conftest import app_config, need_service
from tests.factories import make_category, make_product, make_user
from tests.smtp import MailSink, SMTPServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], Any], seconds: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def _place_orders(app, count: int, *, lines: int = 2) -> tuple[list[int], str]:
    """Place `count` orders through the API; returns their ids and the buyer's email."""
    with app.app_context():
        category = make_category()
        products = [make_product(category, name=f"Gadget {n}", stock=1000).id for n in range(lines)]
        buyer = make_user(first_name="Ada", email="ada@example.com")
        headers = {"Authorization": f"Bearer {create_access_token(identity=buyer.id)}"}
    client = app.test_client()
    ids = []
    for n in range(count):
        items = [{"product_id": pid, "quantity": n + 1} for pid in products]
        response = client.post("/api/orders/", json={"items": items}, headers=headers)
        assert response.status_code == 201, response.get_json()
        ids.append(response.get_json()["id"])
    return ids, "ada@example.com"


def _outbox(app) -> dict[int, EmailOutbox]:
    with app.app_context():
        rows = db.session.scalars(select(EmailOutbox)).all()
        db.session.expunge_all()
        return {row.order_id: row for row in rows}


# ---- without a broker: the email is sent in-process after commit ------------------------------


def test_order_sends_one_email_in_process_with_the_seed_text(app, monkeypatch):
    sink = MailSink()
    with SMTPServer(sink) as server:
        monkeypatch.setitem(app.config, "MAIL_SERVER", "127.0.0.1")
        monkeypatch.setitem(app.config, "MAIL_PORT", server.port)
        (order_id,), address = _place_orders(app, 1)

    assert sink.subjects() == [f"Order Confirmation - Order #{order_id}"]
    message = sink.received[0]
    assert message["To"] == address and message["X-Envelope-To"] == address
    body = message.get_payload()
    assert body.startswith("Dear Ada,")
    assert "- Gadget 0 (Quantity: 1)" in body and "- Gadget 1 (Quantity: 1)" in body
    assert _outbox(app)[order_id].status == "sent"


def test_without_a_mail_server_the_email_is_logged_and_marked_sent(app, caplog):
    caplog.set_level("INFO", logger="shop.orders.emails")
    (order_id,), _ = _place_orders(app, 1)

    assert f"Order Confirmation - Order #{order_id}" in caplog.text
    assert _outbox(app)[order_id].status == "sent"


def test_failed_email_is_recorded_visible_to_staff_and_the_order_stands(app, client, staff_headers, monkeypatch):
    monkeypatch.setitem(app.config, "MAIL_SERVER", "127.0.0.1")
    monkeypatch.setitem(app.config, "MAIL_PORT", free_port())  # nothing listens there
    (order_id,), _ = _place_orders(app, 1)

    row = _outbox(app)[order_id]
    assert row.status == "failed" and "Connection" in row.last_error
    failed = client.get("/api/orders/emails/?status=failed", headers=staff_headers)
    assert failed.status_code == 200
    assert [(e["order_id"], e["status"]) for e in failed.get_json()] == [(order_id, "failed")]


def test_customers_cannot_see_the_email_outbox(client, user_headers):
    assert client.get("/api/orders/emails/", headers=user_headers).status_code == 403


# ---- with RabbitMQ and a real worker process ---------------------------------------------------


class Worker:
    """A `celery -A celery_worker worker` (or `beat`) process on the test database, broker and SMTP server."""

    def __init__(self, env: dict[str, str], role: str = "worker") -> None:
        self.env = env
        self.role = role
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.gettempdir()) / f"shop-{role}-{os.getpid()}.log"

    def start(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", "celery_worker", self.role, "-l", "info"]
        if self.role == "worker":
            command += ["--pool=solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
            command += ["-n", f"test{time.time_ns()}@%h"]
            ready = "ready."
        else:
            command += ["--schedule", str(self.log.with_suffix(".schedule"))]
            ready = "beat: Starting..."
        self.log.write_text("")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: ready in self.log.read_text(errors="replace"), 60, f"the {self.role} to be ready")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def broker_url() -> str:
    need_service("TEST_DATABASE_URL (PostgreSQL, shared with the worker)", os.environ.get("TEST_DATABASE_URL"))
    return need_service("CELERY_BROKER_URL", os.environ.get("CELERY_BROKER_URL"))


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[MailSink, int]]:
    mail = MailSink()
    with SMTPServer(mail) as server:
        yield mail, server.port


@pytest.fixture(scope="module")
def broker_app(app, broker_url, sink) -> Iterator[Any]:
    """The app as a web process with a broker: it publishes tasks instead of running them."""
    _, port = sink
    broker = create_app(app_config(CELERY=celery_config(broker_url), MAIL_SERVER="127.0.0.1", MAIL_PORT=port))
    broker.extensions["celery"].control.purge()
    yield broker
    app.extensions["celery"].set_current()
    app.extensions["celery"].set_default()


@pytest.fixture(scope="module")
def background_env(broker_url, sink) -> dict[str, str]:
    _, port = sink
    return {
        **os.environ,
        "DATABASE_URL": os.environ["TEST_DATABASE_URL"],
        "CELERY_BROKER_URL": broker_url,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(port),
        "EMAIL_MAX_RETRIES": "2",
        "EMAIL_RETRY_BACKOFF_MAX": "1",
        "OUTBOX_RELAY_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def worker(background_env) -> Iterator[Worker]:
    process = Worker(background_env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def beat(background_env, worker) -> Iterator[Worker]:
    """`celery beat` as deployed: it runs the outbox relay every OUTBOX_RELAY_SECONDS (here 1 s)."""
    process = Worker(background_env, role="beat")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def mail(sink) -> Iterator[MailSink]:
    mail, _ = sink
    mail.received.clear()
    mail.refuse = mail.stall = False
    mail.stalled.clear()
    mail.release.clear()
    mail.attempts = 0
    yield mail
    mail.release.set()


def _settled(app, order_ids: list[int]) -> bool:
    rows = _outbox(app)
    return all(rows[order_id].status != "pending" for order_id in order_ids)


def test_worker_sends_exactly_one_email_per_order(broker_app, worker, beat, mail):
    order_ids, address = _place_orders(broker_app, 5)

    wait_until(lambda: len(mail.received) >= 5, what="five emails")
    wait_until(lambda: _settled(broker_app, order_ids), what="the outbox to settle")
    time.sleep(1)  # a duplicate, if any, would arrive now
    assert sorted(mail.subjects()) == sorted(f"Order Confirmation - Order #{i}" for i in order_ids)
    assert {message["To"] for message in mail.received} == {address}


def _relay(app) -> int:
    with app.app_context():
        return app.extensions["celery"].tasks["shop.orders.tasks.relay_outbox"].apply().result


def test_broker_down_orders_are_placed_the_relay_keeps_them_owed_then_delivers_each_once(
    app, broker_app, worker, mail, monkeypatch
):
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    monkeypatch.delenv("CELERY_BROKER_URL")  # Celery prefers the variable to its configuration
    down = create_app(app_config(CELERY=celery_config(closed)))
    try:
        # The request never talks to the broker: orders are placed while it is down.
        order_ids, _ = _place_orders(down, 4)
        # A relay run while the broker is down publishes nothing and leaves every email owed.
        assert _relay(down) == 0
    finally:
        monkeypatch.undo()
        broker_app.extensions["celery"].set_current()
        broker_app.extensions["celery"].set_default()
    assert mail.received == []
    assert all(row.status == "pending" for row in _outbox(app).values())

    # The broker is back: the next run publishes each owed email once.
    assert _relay(broker_app) == 4

    wait_until(lambda: _settled(broker_app, order_ids), what="the relayed emails")
    time.sleep(1)
    assert sorted(mail.subjects()) == sorted(f"Order Confirmation - Order #{i}" for i in order_ids)
    assert _relay(broker_app) == 0


def test_worker_killed_while_sending_delivers_after_restart_once(broker_app, worker, beat, mail):
    mail.stall = True
    (order_id,), _ = _place_orders(broker_app, 1)
    assert mail.stalled.wait(30), "the worker never started sending"

    worker.kill()
    mail.release.set()
    worker.start()

    wait_until(lambda: _settled(broker_app, [order_id]), what="the email after the restart")
    time.sleep(1)
    assert mail.subjects() == [f"Order Confirmation - Order #{order_id}"]
    assert mail.attempts == 2


def test_smtp_refusing_mail_retries_then_records_failure(broker_app, worker, beat, mail):
    mail.refuse = True
    (order_id,), _ = _place_orders(broker_app, 1)

    wait_until(lambda: _settled(broker_app, [order_id]), seconds=60, what="the email to fail for good")

    row = _outbox(broker_app)[order_id]
    assert row.status == "failed" and row.attempts == 3  # the first try and EMAIL_MAX_RETRIES=2 retries
    assert "550" in row.last_error
    assert mail.received == [] and mail.attempts == 3
