"""Real servers for the operations tests: gunicorn, Nginx and Prometheus on loopback, always stopped.

Every process runs in its own process group and is killed in `finally` by its fixture; every wait
is bounded. Binaries come from Debian's packages (nginx, prometheus); a missing one skips the test
with the reason, or fails it when REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import need_service

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def need_binary(name: str) -> str:
    """The binary's path, or skip (fail when REQUIRE_SERVICES=1) when it is not installed."""
    return need_service(f"`{name}` (a Debian package .ci/run installs)", shutil.which(name))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Any, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - not up yet
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class Server:
    """A process started in its own group, with its output in a file."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (a gunicorn master and its workers), then reap."""
        with suppress(ProcessLookupError):  # the group may outlive its leader: signal it anyway
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log_file.close()

    def stop(self) -> None:
        """Graceful first (TERM), then KILL."""
        if self.process.poll() is None:
            with suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
        self.kill()


@contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()


def gunicorn_env(database_url: str, metrics_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an app instance under test: its own metrics directory, no other services."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "BIND"}
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "RATELIMIT_ENABLED": "false",
            "MAX_PENDING_ORDERS": "0",  # process tests place many orders no one pays
            "MAX_PENDING_UNITS": "0",
            "MAX_ORDERS_PER_HOUR": "0",
            "LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


def start_gunicorn(port: int, workers: int, env: dict[str, str], log: Path) -> Server:
    args = [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
    server = Server(
        f"gunicorn:{port}", args, log, env={**env, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)}
    )
    try:
        # Every worker has loaded the app (gunicorn.conf.py logs it), so each can take requests.
        wait_until(
            lambda: server.output().count('"Worker ready (pid: ') >= workers,
            timeout=60,
            what=f"{workers} gunicorn workers on {port}",
        )
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
            timeout=30,
            what=f"gunicorn on {port}",
        )
    except BaseException:
        server.kill()
        print(server.output()[-5000:])  # shown by pytest with the failure
        raise
    return server


@contextmanager
def live_shop(database_url: str, work: Path, **env: str) -> Iterator[str]:
    """The shop under gunicorn (one worker) on a loopback port and the given database; yields its base URL."""
    port = free_port()
    server = start_gunicorn(port, 1, gunicorn_env(database_url, work / "metrics", **env), work / "gunicorn.log")
    with running(server):
        yield f"http://127.0.0.1:{port}"


def load_nginx_render() -> Any:
    """nginx/render.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("shop_nginx_render", ROOT / "nginx" / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_certificate(directory: Path) -> tuple[Path, Path]:
    subprocess.run(["sh", str(ROOT / "nginx" / "make-cert.sh"), str(directory)], check=True, capture_output=True)
    return directory / "fullchain.pem", directory / "privkey.pem"


@contextmanager
def nginx_prefix() -> Iterator[Path]:
    """A directory of Nginx's own under /tmp that its workers (`nobody` when run as root) can traverse."""
    prefix = Path(tempfile.mkdtemp(prefix="shop-nginx-"))
    prefix.chmod(0o755)
    try:
        yield prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def nginx_user() -> str | None:
    return "nobody nogroup" if os.geteuid() == 0 else None


def start_nginx(nginx: str, prefix: Path, config: Path, ports: list[int]) -> Server:
    server = Server("nginx", [nginx, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"], prefix / "nginx.out")

    def listening() -> bool:
        for port in ports:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        return True

    try:
        wait_until(listening, timeout=15, what="nginx to listen")
    except BaseException:
        server.kill()
        raise
    return server


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format → {name: [(labels, value), ...]} (enough for the shop's own pages)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def metric_sum(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(
        value
        for sample_labels, value in samples.get(name, [])
        if all(sample_labels.get(key) == wanted for key, wanted in labels.items())
    )
