"""Request ids, JSON access lines, and the shop's own metrics, in process."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from shop.core import metrics
from shop.core.logging import JsonFormatter, configure_json_logging
from tests.ops_processes import free_port


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """What the access logger writes, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("shop.access")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_request_id_from_the_proxy_is_echoed_and_logged(client: FlaskClient, access_lines: io.StringIO) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "edge-7f3a.1"})
    assert response.headers["X-Request-ID"] == "edge-7f3a.1"
    (line,) = lines_of(access_lines)
    assert line["request_id"] == "edge-7f3a.1"
    assert line["logger"] == "shop.access"
    assert line["method"] == "GET"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["user_id"] is None
    assert line["pid"] == os.getpid()


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 129, 'quote"s', "semi;colon"])
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_new_one(client: FlaskClient, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    first = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    second = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    assert first != sent
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second


def test_the_access_line_names_the_signed_in_user_and_errors_get_one_too(
    client: FlaskClient, user: Any, user_headers: dict[str, str], access_lines: io.StringIO
) -> None:
    assert client.get("/api/users/me/", headers=user_headers).status_code == 200
    assert client.get("/api/no-such-thing/").status_code == 404
    me, missing = lines_of(access_lines)
    assert me["user_id"] == str(user.id)
    assert me["path"] == "/api/users/me/"
    assert missing["status"] == 404
    assert missing["user_id"] is None
    assert me["request_id"] != missing["request_id"]


def test_json_lines_carry_extra_fields_and_tracebacks() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.getLogger("shop.test").makeRecord(
            "shop.test", logging.ERROR, __file__, 1, "failed %s", ("order",), sys.exc_info(), extra={"order_id": 7}
        )
    line = json.loads(formatter.format(record))
    assert line["message"] == "failed order"
    assert line["level"] == "ERROR"
    assert line["order_id"] == 7
    assert "ValueError: broken" in line["exc_info"]


def test_json_logging_goes_to_stdout_unless_something_handles_logs_already(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    configure_json_logging("WARNING")
    (handler,) = root.handlers
    assert isinstance(handler.formatter, JsonFormatter)
    assert root.level == logging.WARNING
    configure_json_logging("DEBUG")  # a second app in the same process changes nothing
    assert root.handlers == [handler]


def test_metrics_page_in_a_single_process(client: FlaskClient) -> None:
    client.get("/healthz")
    page = client.get("/metrics")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'flask_http_request_duration_seconds_count{method="GET",status="200",url_rule="/healthz"}' in text
    assert 'shop_cache_requests_total{kind="list",result="hit"}' in text
    assert "shop_process_resident_memory_bytes" in text


def test_rate_limited_answers_are_counted() -> None:
    app = Flask("limited")
    metrics.init_app(app)
    app.add_url_rule("/busy", "busy", lambda: ("slow down", 429))
    app.add_url_rule("/fine", "fine", lambda: "ok")
    before = REGISTRY.get_sample_value("shop_rate_limited_total")
    client = app.test_client()
    client.get("/busy")
    client.get("/fine")
    client.get("/busy")
    assert REGISTRY.get_sample_value("shop_rate_limited_total") == before + 2


def test_process_cpu_and_memory_are_sampled() -> None:
    metrics.sample_process()
    assert REGISTRY.get_sample_value("shop_process_resident_memory_bytes") > 10_000_000
    assert REGISTRY.get_sample_value("shop_process_cpu_seconds_total") > 0


def _tasks(task: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("shop_celery_tasks_total", {"task": task, "outcome": outcome}) or 0.0


def test_celery_task_outcomes_and_durations_are_counted(app: Flask) -> None:
    celery_app = app.extensions["celery"]

    @celery_app.task(name="ops_test.add")
    def add(x: int, y: int) -> int:
        return x + y

    @celery_app.task(name="ops_test.broken")
    def broken() -> None:
        raise RuntimeError("no")

    durations = REGISTRY.get_sample_value("shop_celery_task_duration_seconds_count", {"task": "ops_test.add"}) or 0
    successes, failures = _tasks("ops_test.add", "success"), _tasks("ops_test.broken", "failure")
    # `.result`, not `.get()`: eager tasks run at once in threads of earlier tests can leave Celery's
    # process-wide "inside a task" flag set, and `.get()` then refuses.
    assert add.apply(args=(2, 3)).result == 5
    assert broken.apply().state == "FAILURE"
    assert _tasks("ops_test.add", "success") == successes + 1
    assert _tasks("ops_test.broken", "failure") == failures + 1
    assert (
        REGISTRY.get_sample_value("shop_celery_task_duration_seconds_count", {"task": "ops_test.add"}) == durations + 1
    )


def test_the_worker_serves_its_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("WORKER_METRICS_PORT", str(port))
    server = metrics.start_worker_metrics_server()
    try:
        page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert page.status_code == 200
    assert "shop_celery_tasks_total" in page.text
    assert "shop_emails_total" in page.text
    monkeypatch.setenv("WORKER_METRICS_PORT", "0")
    assert metrics.start_worker_metrics_server() is None


def test_multiprocess_files_of_old_and_dead_processes_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    own = os.getpid()
    for name in ("counter_1.db", f"counter_{own}.db", "gauge_liveall_2.db", "histogram_3.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    metrics.clean_multiprocess_dir()
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"counter_{own}.db", "notes.txt"]

    (tmp_path / "gauge_liveall_99.db").write_bytes(b"")
    (tmp_path / "counter_99.db").write_bytes(b"")
    metrics.mark_process_dead(99)
    assert not (tmp_path / "gauge_liveall_99.db").exists()
    assert (tmp_path / "counter_99.db").exists()  # a dead worker's counts stay in the totals
