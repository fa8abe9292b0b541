"""`make profile`: py-spy on the workers under each direct scenario, summed by layer."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

from bench.common import ROOT, VENV_BIN
from bench.measure import run_wrk, scenario_groups
from bench.stack import Stack

# Profiling


def profile(stack: Stack, tools: dict[str, str], token: str, seconds: float, out: Path) -> None:
    """py-spy on every worker of the serving gunicorn while wrk runs, the ceilings' included.

    Only samples holding the GIL count (`--gil`): Python at work, not waiting on a socket. Writes
    py-spy's collapsed stacks (for speedscope or flamegraph.pl) and prints them summed by layer.
    """
    py_spy = VENV_BIN / "py-spy"
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for group in scenario_groups(stack, token):
        for scenario in group:
            if scenario.pgbench or not scenario.url.startswith("http://"):
                continue  # the app's own workers only: direct scenarios and the ceiling app
            slug = re.sub(r"[^a-z0-9]+", "-", scenario.name.lower()).strip("-")
            raw = out / f"{slug}.txt"
            command = [str(py_spy), "record", "--pid", str(scenario.serving[0]), "--subprocesses", "--gil"]
            command += ["--rate", "250", "--format", "raw", "--duration", str(round(seconds))]
            command += ["--output", str(raw), "--nonblocking"]
            recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            figures, _ = run_wrk(tools, scenario, seconds)
            recorder.wait(timeout=seconds + 60)
            summary = f"{scenario.name} ({figures['rps']:,.0f}/s under py-spy), {raw.relative_to(ROOT)}:\n"
            summary += summarize_profile(raw)
            summaries.append(summary)
            print(summary, flush=True)
    (out / "summary.txt").write_text("\n\n".join(summaries) + "\n")


# Where a sampled frame's time goes, by the package (or shop module) of the innermost frame that is not
# the standard library: the profile summed by library, which is what the report states.
LAYERS = [
    ("ratelimit", "rate limit (flask-limiter, limits, shop.infra.ratelimit)"),
    ("flask_limiter", "rate limit (flask-limiter, limits, shop.infra.ratelimit)"),
    ("limits", "rate limit (flask-limiter, limits, shop.infra.ratelimit)"),
    ("sqlalchemy", "SQL (SQLAlchemy, psycopg2)"),
    ("psycopg2", "SQL (SQLAlchemy, psycopg2)"),
    ("flask_sqlalchemy", "SQL (SQLAlchemy, psycopg2)"),
    ("redis", "Redis client (redis-py)"),
    ("cachelib", "Redis client (redis-py)"),
    ("celery", "task publishing (Celery, kombu, amqp)"),
    ("kombu", "task publishing (Celery, kombu, amqp)"),
    ("amqp", "task publishing (Celery, kombu, amqp)"),
    ("jwt", "tokens (PyJWT, flask-jwt-extended)"),
    ("flask_jwt_extended", "tokens (PyJWT, flask-jwt-extended)"),
    ("marshmallow", "schemas (marshmallow, webargs, flask-smorest)"),
    ("webargs", "schemas (marshmallow, webargs, flask-smorest)"),
    ("flask_smorest", "schemas (marshmallow, webargs, flask-smorest)"),
    ("prometheus_client", "metrics (prometheus)"),
    ("prometheus_flask_exporter", "metrics (prometheus)"),
    ("logging", "access log (logging, shop.core.logging)"),
    ("flask_cors", "headers (CORS, shop.core.security)"),
    ("security", "headers (CORS, shop.core.security)"),
    ("flask", "Flask, Werkzeug"),
    ("werkzeug", "Flask, Werkzeug"),
    ("blinker", "Flask, Werkzeug"),
    ("gunicorn", "gunicorn (accept, parse, write, close)"),
]


def _layer(frame: str) -> str | None:
    """The layer of one frame, from its file: `name (package/module.py:line)`."""
    path = frame.rsplit(" (", 1)[-1].rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    if parts[0] == "shop":
        module = parts[-1].removesuffix(".py")
        for name, layer in LAYERS:
            if name == module:
                return layer
        return "the shop's own code"
    for name, layer in LAYERS:
        if parts[0] == name:
            return layer
    return None  # the standard library, or an unlisted package: counted with its caller


def summarize_profile(raw: Path) -> str:
    """py-spy's collapsed stacks summed by layer: each sample goes to its innermost non-stdlib frame's layer."""
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if not frame.startswith(("process ", "thread "))]
        samples = int(count)
        total += samples
        layer = next((found for frame in reversed(frames) if (found := _layer(frame))), "other")
        layers[layer] += samples
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples of the workers, by layer (innermost non-stdlib frame):"]
    lines += [f"  {samples / total:6.1%}  {layer}" for layer, samples in layers.most_common()]
    return "\n".join(lines)
