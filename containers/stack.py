"""Start and stop the Compose stack with whichever engine this machine has (README "Run the full stack").

    python containers/stack.py images                  # build every image once, report their sizes
    python containers/stack.py up [--build] [--project NAME] [--env-file FILE]
    python containers/stack.py down [--volumes] [--project NAME] [--env-file FILE]

Without Docker, on a Debian machine as root, Podman is set up first (containers/setup-podman.sh).

Docker Compose starts the services in their `depends_on` order itself; then each is waited for
until it is healthy, has completed or runs, as its dependents need. podman-compose on Podman 4.3
cannot (it ignores the conditions, and Podman runs health checks from systemd timers, which a
container host without systemd lacks), so there the same order is followed group by group: each
group starts once what it depends on is healthy, has completed, or runs, as its condition says;
health checks are run on demand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "containers" / "compose.sh"
NETWORK_ADDRESSES = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"


class StackError(RuntimeError):
    pass


@dataclass
class Stack:
    """One Compose project: its name, the env file Compose interpolates from, the engine."""

    project: str = "shop"
    env_file: Path | None = None
    engine: str = field(default_factory=lambda: engine_name() or "")

    def compose(self, *args: str, timeout: float = 900, capture: bool = False) -> subprocess.CompletedProcess[str]:
        command = [str(COMPOSE), "-p", self.project]
        if self.env_file is not None:
            command += ["--env-file", str(self.env_file)]
        return subprocess.run(  # noqa: S603 - our own script
            [*command, *args], cwd=ROOT, text=True, timeout=timeout, check=True, capture_output=capture
        )

    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.compose("config", capture=True).stdout)

    def containers(self, service: str, *, every: bool = True) -> list[str]:
        """Names of the service's containers (all of them, or only the running ones)."""
        result = subprocess.run(  # noqa: S603
            [
                self.engine,
                "ps",
                *(["--all"] if every else []),
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "{{.Names}}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return sorted(result.stdout.split())

    def up(self, *, build: bool = False, timeout: float = 300) -> None:
        services = self.config()["services"]
        if build:
            self.build(services)
        deadline = time.monotonic() + timeout
        if self.engine == "docker":  # Compose keeps the order itself; then everything is waited for
            self.compose("up", "--detach", "--no-build", timeout=timeout)
            for name in services:
                self.wait(name, services[name], deadline)
            return
        for group in start_order(services):
            self.compose("up", "--detach", "--no-deps", "--no-build", *group)
            for name in group:
                self.wait(name, services[name], deadline)

    def build(self, services: dict[str, Any] | None = None) -> dict[str, str]:
        """Build each image once (app, worker, beat and migrate share one): {image: service}."""
        services = services if services is not None else self.config()["services"]
        builders = {service.get("image", name): name for name, service in services.items() if "build" in service}
        # One at a time: parallel builds only fight over the cores and memory (podman-compose runs
        # every build it is given at once).
        for name in sorted(set(builders.values())):
            self.compose("build", name)
        return builders

    def image_sizes(self, images: list[str]) -> dict[str, int]:
        sizes = {}
        for image in images:
            result = subprocess.run(  # noqa: S603
                [self.engine, "image", "inspect", "--format", "{{.Size}}", image],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            sizes[image] = int(result.stdout.split()[0])
        return sizes

    def wait(self, name: str, service: dict[str, Any], deadline: float) -> None:
        """Until each container of the service is as its dependents need it (healthy, done, running)."""
        needs = wanted_state(service)
        for container in self.containers(name):
            while True:
                state = self.state(container, needs)
                if state == "ok":
                    break
                if state == "failed":
                    raise StackError(f"{container} failed: {self.logs(container)}")
                if time.monotonic() > deadline:
                    raise StackError(f"{container} did not become {needs} in time: {self.logs(container)}")
                time.sleep(2)

    def state(self, container: str, needs: str) -> str:
        info = json.loads(
            subprocess.run(  # noqa: S603
                [self.engine, "inspect", container], capture_output=True, text=True, timeout=60, check=True
            ).stdout
        )[0]["State"]
        if needs == "completed":
            if info["Status"] == "exited":
                return "ok" if info["ExitCode"] == 0 else "failed"
            return "waiting"
        if info["Status"] == "exited":
            return "failed"
        if needs == "healthy" and self.engine == "docker":  # Docker runs the checks itself
            return "ok" if info.get("Health", {}).get("Status") == "healthy" else "waiting"
        if needs == "healthy":
            check = subprocess.run(  # noqa: S603 - runs the container's own HEALTHCHECK
                [self.engine, "healthcheck", "run", container], capture_output=True, text=True, timeout=60
            )
            return "ok" if check.returncode == 0 else "waiting"
        return "ok" if info["Status"] == "running" else "waiting"

    def address(self, container: str) -> str:
        """The container's address on the stack's network."""
        result = subprocess.run(  # noqa: S603
            [self.engine, "inspect", "--format", NETWORK_ADDRESSES, container],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.split()[0]

    def json_logs(self, container: str) -> list[dict[str, Any]]:
        """The container's log lines that are JSON objects (Nginx's access log, the app's logs)."""
        result = subprocess.run(  # noqa: S603
            [self.engine, "logs", container], capture_output=True, text=True, timeout=120, check=True
        )
        entries = []
        for line in (result.stdout + result.stderr).splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return entries

    def logs(self, container: str, lines: int = 40) -> str:
        result = subprocess.run(  # noqa: S603
            [self.engine, "logs", "--tail", str(lines), container], capture_output=True, text=True, timeout=60
        )
        return "\n" + result.stdout + result.stderr

    def down(self, *, volumes: bool = False) -> None:
        self.compose("down", *(["--volumes"] if volumes else []), "--timeout", "10")


def wanted_state(service: dict[str, Any]) -> str:
    """What a service must reach before its dependents start: healthy, completed or running."""
    if service.get("restart") == "no" and "healthcheck" not in service:
        return "completed"
    test = service.get("healthcheck", {}).get("test")
    if test and test != ["NONE"] and not service.get("healthcheck", {}).get("disable"):
        return "healthy"
    return "running"


def start_order(services: dict[str, Any]) -> list[list[str]]:
    """The services in groups: each group depends only on services of earlier groups."""
    active = {name for name, service in services.items() if not service.get("profiles")}
    depends = {name: set(_dependencies(services[name])) & active for name in active}
    groups: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(active):
        ready = sorted(name for name in active - placed if depends[name] <= placed)
        if not ready:
            raise StackError(f"depends_on has a cycle among {sorted(active - placed)}")
        groups.append(ready)
        placed.update(ready)
    return groups


def _dependencies(service: dict[str, Any]) -> Sequence[str]:
    depends = service.get("depends_on") or {}
    return list(depends) if isinstance(depends, dict | list) else []


def engine_name() -> str | None:
    result = subprocess.run([str(COMPOSE), "--engine"], capture_output=True, text=True, timeout=60)  # noqa: S603
    return result.stdout.strip() or None if result.returncode == 0 else None


def ensure_engine() -> str | None:
    """The engine to use: Docker as found; else Podman, set up (engine, settings, Debian base images:
    each step only when missing) when this is a Debian machine we are root on."""
    engine = engine_name()
    if engine in (None, "podman") and os.geteuid() == 0 and Path("/usr/bin/apt-get").exists():
        subprocess.run([str(ROOT / "containers" / "setup-podman.sh")], check=True, timeout=900)  # noqa: S603
        engine = engine_name()
    return engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["images", "up", "down"])
    parser.add_argument("--project", default="shop")
    parser.add_argument("--env-file", type=Path)
    parser.add_argument("--build", action="store_true", help="up: build the images first")
    parser.add_argument("--volumes", action="store_true", help="down: remove the named volumes too")
    args = parser.parse_args(argv)
    engine = ensure_engine()
    if engine is None:
        print("no container engine: see README 'Run the full stack'", file=sys.stderr)
        return 1
    stack = Stack(project=args.project, env_file=args.env_file, engine=engine)
    if args.action == "images":
        sizes = stack.image_sizes(sorted(stack.build()))
        for image, size in sizes.items():
            print(f"{image:<40} {size / 1e6:8.0f} MB")
    elif args.action == "up":
        stack.up(build=args.build)
    else:
        stack.down(volumes=args.volumes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
