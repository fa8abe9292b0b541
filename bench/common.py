"""What every part of the benchmark shares: paths, the data's sizes, logging, tools, waiting."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent

PRODUCTS = 10_000
CATEGORIES = 20
PAGES = PRODUCTS // 20
DETAIL_IDS = 1000  # product pages cached before the detail scenario, and chosen from
HOT = PRODUCTS  # the flash sale's product (HOT_STOCK units); every other order goes to 1..SPREAD
SPREAD = PRODUCTS - 1
BUYERS = 200  # the flash sale's buyers, each with a token of their own
ATTEMPTS = 2000  # their attempts between them
HOT_STOCK = 100  # units of the hot product
MICRO_CACHE_SECONDS = 5  # nginx/render.py's default, stated in the report
RAISED_LIMIT = "100000000/minute"
APT_PACKAGES = {"wrk": "wrk", "nginx": "nginx", "pgbench": "postgresql-client", "openssl": "openssl"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> float:
    return os.getloadavg()[0]


# Tools and limits


def ensure_tools() -> dict[str, str]:
    """wrk, nginx, pgbench and openssl from Debian's packages, installed when missing (as root)."""
    missing = sorted({package for name, package in APT_PACKAGES.items() if not shutil.which(name)})
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        log(f"installing {', '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        install = [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        subprocess.run(install, check=True, env=env)
    paths = {name: shutil.which(name) for name in APT_PACKAGES}
    absent = [name for name, path in paths.items() if not path]
    if absent:
        sys.exit(f"bench: not installed: {', '.join(absent)}")
    return {name: str(path) for name, path in paths.items()}


def raise_open_files(wanted: int = 65536) -> int:
    """Enough file descriptors for 10,000 connections in wrk and in Nginx (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((wanted, max(wanted, hard)), (min(wanted, hard), hard)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
    return soft


def _wait(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - not up yet
            error = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {seconds}s (last error: {error})")
