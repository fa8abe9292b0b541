"""A redis-server of a test's own on a free loopback port, so stopping or freezing it disturbs no one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis


class RedisServer:
    """A redis-server on a free loopback port that a test may stop, restart, pause and resume."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db_number: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db_number}"

    def client(self, db_number: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db_number, socket_timeout=2)

    def start(self) -> None:
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kill it: every key is gone (no persistence), as after a crash or a restart."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """Freeze it: connections stay open but nothing answers, as in a network partition."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, so stopping it disturbs no one (needs redis-server, as REDIS_URL does)."""
    from tests.conftest import need_service  # tests/conftest.py registers this fixture

    need_service("REDIS_URL", os.environ.get("REDIS_URL"))
    if not shutil.which("redis-server"):
        need_service("redis-server (binary)", None)
    with tempfile.TemporaryDirectory(prefix="shop-redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            if server.process is not None:
                server.resume()
            server.stop()


def commands_sent(server: RedisServer, action: Callable[[], Any]) -> list[str]:
    """The commands clients sent to Redis while `action` ran (MONITOR; not those a Lua script ran)."""
    marker = f"end-{uuid.uuid4()}"
    marker_client = server.client()
    marker_client.ping()
    with server.client().monitor() as monitor:
        action()
        marker_client.echo(marker)
        commands = []
        while marker not in (command := monitor.next_command())["command"]:
            if command["client_type"] != "lua":
                commands.append(command["command"].split()[0].upper())
    return commands
