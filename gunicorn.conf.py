"""gunicorn settings for the shop: `gunicorn -c gunicorn.conf.py wsgi:app`.

Read from the environment: BIND (comma-separated addresses, default 127.0.0.1:8000),
WEB_CONCURRENCY (workers, default 2 x cores + 1), GUNICORN_WORKER_CLASS (default sync, chosen by
measurement: README "Operations"), GUNICORN_THREADS (gthread only), GUNICORN_TIMEOUT,
GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE, PROMETHEUS_MULTIPROC_DIR, LOG_LEVEL.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# Prometheus multiprocess mode: set before the app (and prometheus_client) is imported, so every
# worker writes its values to files here and /metrics adds them all up. One directory per master:
# two gunicorns on one host must not share it. Kept through a HUP (the config is read again).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="shop-metrics-")
    os.environ["SHOP_METRICS_DIR_MADE"] = "1"  # ours to remove on exit
METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

bind = [address.strip() for address in os.environ.get("BIND", "127.0.0.1:8000").split(",") if address.strip()]
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
# More than one thread turns gunicorn's sync worker into gthread: threads only when asked for.
threads = int(os.environ.get("GUNICORN_THREADS", "4")) if worker_class == "gthread" else 1
# Each worker imports the app after the fork, so it opens its own pools, and a HUP loads new code.
# (With preload the app, and prometheus_client's files, would exist before on_starting runs.)
preload_app = False

# A request that takes longer than this is stuck: the worker is killed and replaced.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# TERM or HUP: workers finish the requests they have within this time before they are stopped.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Longer than Nginx's upstream keepalive_timeout (60 s), so Nginx closes idle connections first.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
# No periodic worker recycling: every new worker adds files to the metrics directory.
max_requests = 0
backlog = 2048
# Request limits in front of the app (Nginx enforces the same or smaller).
limit_request_line = 8190
limit_request_fields = 100
# Heartbeat files in memory, not on a container's overlay disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - the standard tmpfs
# Several instances run on one host: a shared default control socket path would collide.
control_socket_disable = True
proc_name = "shop"

# Logs: JSON lines on stdout. The app writes one access line per request itself (with the request
# id and the user id, which gunicorn does not know), so gunicorn's own access log stays off.
accesslog = None
logger_class = "shop.infra.gunicorn.AppLogsAccess"  # gunicorn would build each access line for nothing
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "shop.core.logging.JsonFormatter"}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        "null": {"class": "logging.NullHandler"},
    },
    "root": {"level": loglevel.upper(), "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["null"], "propagate": False},
    },
}


def on_starting(server: Any) -> None:
    """A fresh metrics directory: files of a previous run would be counted again."""
    if METRICS_DIR.exists():
        for entry in METRICS_DIR.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    METRICS_DIR.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker: Any) -> None:
    """Each worker opens its own database connections: drop any it would share with the master.

    Without preload nothing is inherited and this costs nothing; it keeps pools per process if
    the app is ever preloaded (`--preload`), without closing the master's sockets.
    """
    from shop.extensions import db

    app = worker.wsgi
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose(close=False)
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges leave /metrics; its counters stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory gunicorn made for itself (one given in the environment stays)."""
    if os.environ.get("SHOP_METRICS_DIR_MADE"):
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
