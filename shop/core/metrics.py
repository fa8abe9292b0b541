"""The shop's own Prometheus metrics, and the /metrics page across every gunicorn worker.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set by `gunicorn.conf.py` before this module is
imported: every worker writes its values to files there and `/metrics` (served by any one worker)
adds them up. HTTP metrics, under the names prometheus-flask-exporter gave them (the dashboards
and alerts read them): `flask_http_request_duration_seconds{method, url_rule, status}` and
`flask_http_request_total{method, status}`, written by one `after_request` hook with the labelled
children looked up once per (method, rule, status); the exporter's three hooks and two `labels()`
calls a request cost about 25 µs, this one about 5. Labels stay few and bounded: the route's
rule, never the raw path; `/metrics` itself (Prometheus scrapes) is not traffic.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import flask
from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

# In multiprocess mode every metric below opens its file as it is created: the directory must exist
# (a one-off command such as `flask db upgrade` in the image has not been through gunicorn's start).
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Latency buckets for HTTP requests and tasks: fewer than the client's default (each bucket is a
# file entry per worker in multiprocess mode), with edges at the alert thresholds (0.5 s, 1 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ORDERS_PLACED = Counter("shop_orders_placed_total", "Orders created")
STOCK_CONFLICTS = Counter("shop_stock_conflicts_total", "Orders refused for lack of stock")
IDEMPOTENT_REPLAYS = Counter("shop_idempotent_replays_total", "Requests answered from a stored Idempotency-Key")
CACHE_REQUESTS = Counter("shop_cache_requests_total", "Catalog response cache lookups", ["kind", "result"])
CACHE_ERRORS = Counter("shop_cache_errors_total", "Response cache operations that failed (Redis unavailable)")
EMAILS = Counter("shop_emails_total", "Order confirmation emails", ["outcome"])
OUTBOX_BACKLOG = Gauge("shop_outbox_backlog", "Emails owed but not yet sent", multiprocess_mode="livemax")
RATE_LIMITED = Counter("shop_rate_limited_total", "Requests refused by the rate limiter (429)")
RATE_LIMIT_FALLBACKS = Counter(
    "shop_rate_limit_fallbacks_total", "Rate limit checks served by in-process counters because Redis failed"
)
HTTP_DURATION = Histogram(
    "flask_http_request_duration_seconds",
    "Flask HTTP request duration in seconds",
    ["method", "url_rule", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter("flask_http_request_total", "Total number of HTTP requests", ["method", "status"])
TASKS = Counter("shop_celery_tasks_total", "Celery tasks finished, by outcome", ["task", "outcome"])
TASK_DURATION = Histogram(
    "shop_celery_task_duration_seconds", "Celery task run time", ["task"], buckets=LATENCY_BUCKETS
)
# Per process (a `pid` label in multiprocess mode), so the dashboard shows every worker's CPU and
# memory; the client's own process_* metrics only describe the process that serves /metrics.
PROCESS_CPU = Gauge("shop_process_cpu_seconds_total", "CPU time used by the process", multiprocess_mode="liveall")
PROCESS_MEMORY = Gauge(
    "shop_process_resident_memory_bytes", "Resident memory of the process", multiprocess_mode="liveall"
)
PROCESS_SAMPLE_SECONDS = 5.0

# Every label value the dashboards and alerts read exists from the start, at 0, so a rate over it is
# 0 rather than no data: cache `kind` is the page (list, detail, categories, category) and `result`
# "hit" or "miss"; email `outcome` is "sent" or "failed".
for _kind in ("list", "detail", "categories", "category"):
    for _result in ("hit", "miss"):
        CACHE_REQUESTS.labels(kind=_kind, result=_result)
for _outcome in ("sent", "failed"):
    EMAILS.labels(outcome=_outcome)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render_metrics() -> tuple[bytes, str]:
    """The text page: the sum over every worker's files in multiprocess mode, else this process."""
    sample_process()
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_process = ProcessCollector(registry=None)
_last_sample = 0.0


def sample_process(now: float | None = None) -> None:
    """Record this process's CPU seconds and resident memory (read from /proc; no-op elsewhere)."""
    global _last_sample
    now = time.monotonic() if now is None else now
    _last_sample = now
    for family in _process.collect():
        for sample in family.samples:
            if sample.name == "process_cpu_seconds_total":
                PROCESS_CPU.set(sample.value)
            elif sample.name == "process_resident_memory_bytes":
                PROCESS_MEMORY.set(sample.value)


_STARTED = "shop.metrics.started"
_UNTRACKED_RULES = frozenset({"/metrics"})
# (method, rule, status) → the histogram's and the counter's children for those labels.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _before_request() -> None:
    flask.request.environ[_STARTED] = time.perf_counter()


def _after_request(response: Response) -> Response:
    request = flask.request  # not a module global: tests read this module's names as metrics
    environ = request.environ
    started = environ.get(_STARTED)
    rule = str(request.url_rule)
    status = response.status_code
    if started is not None and rule not in _UNTRACKED_RULES:
        method = environ["REQUEST_METHOD"]
        children = _children.get((method, rule, status))
        if children is None:
            children = _children[(method, rule, status)] = (
                HTTP_DURATION.labels(method=method, url_rule=rule, status=str(status)),
                HTTP_REQUESTS.labels(method=method, status=str(status)),
            )
        children[0].observe(max(time.perf_counter() - started, 0.0))
        children[1].inc()
    if status == 429:
        RATE_LIMITED.inc()
    if time.monotonic() - _last_sample >= PROCESS_SAMPLE_SECONDS:
        sample_process()
    return response


def init_app(app: Flask) -> None:
    """HTTP request metrics, rate-limited answers counted, and each worker's CPU and memory gauges kept fresh."""
    app.before_request(_before_request)
    app.after_request(_after_request)


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (gunicorn's `child_exit`, Celery's process shutdown)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


# Celery: task outcomes and durations, and a metrics endpoint in the worker's main process.
_task_started: dict[str, float] = {}


def _task_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _task_started[task_id] = time.perf_counter()


def _task_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _task_started.pop(task_id, None) if task_id else None
    name = getattr(task, "name", "unknown")
    TASKS.labels(task=name, outcome=(state or "unknown").lower()).inc()
    if started is not None:
        TASK_DURATION.labels(task=name).observe(time.perf_counter() - started)


def clean_multiprocess_dir(**_: Any) -> None:
    """Drop the files of earlier runs from the multiprocess directory: they would count again.

    Called by the Celery worker at start, before its pool forks; this process's own files (named
    `<kind>_<pid>.db`) are fresh and stay.
    """
    directory = multiprocess_dir()
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    own = f"_{os.getpid()}.db"
    for entry in path.glob("*.db"):
        if not entry.name.endswith(own):
            entry.unlink(missing_ok=True)


def _worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    mark_process_dead(pid or os.getpid())


def start_worker_metrics_server(**_: Any) -> Any:
    """Serve /metrics from the Celery worker's main process on WORKER_METRICS_PORT (0: none).

    Listens on WORKER_METRICS_ADDR (default 127.0.0.1; 0.0.0.0 in a container). Returns the server.
    """
    port = int(os.environ.get("WORKER_METRICS_PORT", "9808"))
    if not port:
        return None
    from prometheus_client import start_http_server

    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    address = os.environ.get("WORKER_METRICS_ADDR", "127.0.0.1")
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server


def connect_celery_metrics() -> None:
    """Count every task's outcome (success, failure, retry) and time it; harmless outside a worker."""
    from celery.signals import task_postrun, task_prerun, worker_init, worker_process_shutdown, worker_ready

    worker_init.connect(clean_multiprocess_dir, weak=False, dispatch_uid="shop.metrics.clean")
    task_prerun.connect(_task_prerun, weak=False, dispatch_uid="shop.metrics.prerun")
    task_postrun.connect(_task_postrun, weak=False, dispatch_uid="shop.metrics.postrun")
    worker_process_shutdown.connect(_worker_process_shutdown, weak=False, dispatch_uid="shop.metrics.shutdown")
    worker_ready.connect(start_worker_metrics_server, weak=False, dispatch_uid="shop.metrics.server")
