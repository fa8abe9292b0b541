"""The benchmark's report: a table on the terminal, the same in docs/performance.md, and a chart (PNG).

`docs/performance.md` keeps its hand-written parts: only the text between the two markers below is
replaced by each run (the whole file is written when the markers are missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin (written by bench/run.py; edit outside these markers) -->"
END = "<!-- bench:end -->"


@dataclass
class Measure:
    """One wrk (or pgbench) run: what it measured and what it saw."""

    name: str
    where: str  # "ceiling", "gunicorn", "nginx"
    url: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    load: float  # 1-minute load average when the run started
    ceiling: str | None = None
    target: float | None = None  # the least ratio to the ceiling the issue asks for
    note: str = ""
    cpu_ms: float | None = None  # CPU time of the serving workers per request
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """A scenario's rounds, averaged, and its ratio to its ceiling measured in the same rounds."""

    name: str
    where: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    load: float
    ceiling: str | None
    ceiling_rps: float | None
    target: float | None
    note: str
    cpu_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        if not self.ceiling_rps:
            return None
        return self.rps / self.ceiling_rps

    @property
    def holds(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target and self.errors == 0


def rows_of(measures: list[Measure]) -> list[Row]:
    """Average each scenario over its rounds; ratios are of averages taken in the same rounds."""
    names: list[str] = []
    for measure in measures:
        if measure.name not in names:
            names.append(measure.name)
    averaged = {}
    for name in names:
        runs = [m for m in measures if m.name == name]
        first = runs[0]
        averaged[name] = Row(
            name=name,
            where=first.where,
            rps=sum(m.rps for m in runs) / len(runs),
            p50_ms=sum(m.p50_ms for m in runs) / len(runs),
            p99_ms=max(m.p99_ms for m in runs),
            errors=sum(m.errors for m in runs),
            load=sum(m.load for m in runs) / len(runs),
            ceiling=first.ceiling,
            ceiling_rps=None,
            target=first.target,
            note=first.note,
            cpu_ms=_mean([m.cpu_ms for m in runs if m.cpu_ms is not None]),
        )
    for row in averaged.values():
        if row.ceiling and row.ceiling in averaged:
            row.ceiling_rps = averaged[row.ceiling].rps
    return list(averaged.values())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _cpu(row: Row) -> str:
    return "" if row.cpu_ms is None else f"{row.cpu_ms:.2f}"


def _ratio(row: Row) -> str:
    return "" if row.ratio is None else f"{row.ratio:.0%}"


def _target(row: Row) -> str:
    if row.target is None:
        return ""
    return f"≥ {row.target:.0%}: **{'holds' if row.holds else 'not met'}**"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| scenario | served by | req/s | p50 ms | p99 ms | errors | server CPU ms/req | ceiling | ratio | target "
        "| load avg |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for row in rows:
        ceiling = f"{row.ceiling} ({row.ceiling_rps:,.0f}/s)" if row.ceiling and row.ceiling_rps else ""
        lines.append(
            f"| {row.name} | {row.where} | {row.rps:,.0f} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.errors} "
            f"| {_cpu(row)} | {ceiling} | {_ratio(row)} | {_target(row)} | {row.load:.1f} |"
        )
    return "\n".join(lines)


def terminal_table(rows: list[Row]) -> str:
    header = f"{'scenario':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>5} {'cpu ms':>7} {'ratio':>6}  target"
    lines = [header, "-" * len(header)]
    for row in rows:
        target = "" if row.target is None else f">= {row.target:.0%} {'holds' if row.holds else 'NOT MET'}"
        lines.append(
            f"{row.name:<44} {row.rps:>8,.0f} {row.p50_ms:>8.1f} {row.p99_ms:>8.1f} {row.errors:>5} "
            f"{_cpu(row):>7} {_ratio(row):>6}  {target}"
        )
    return "\n".join(lines)


def chart(rows: list[Row], path: Path, title: str) -> None:
    """Each scenario's ratio to its ceiling as a bar, its target as a tick; ceilings' req/s beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [row for row in rows if row.ratio is not None]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(scenarios) + 1.6), dpi=100)
    names = [f"{row.name} ({row.rps:,.0f}/s)" for row in scenarios]
    ratios = [row.ratio * 100 for row in scenarios]  # type: ignore[operator]
    colors = ["#8c8c8c" if row.target is None else ("#2e7d32" if row.holds else "#c62828") for row in scenarios]
    positions = list(range(len(scenarios)))[::-1]
    ax.barh(positions, ratios, color=colors, height=0.6)
    for position, row, ratio in zip(positions, scenarios, ratios, strict=True):
        ax.text(ratio + 1, position, f"{ratio:.0f}% of {row.ceiling}", va="center", fontsize=8)
        if row.target is not None:
            ax.plot([row.target * 100] * 2, [position - 0.4, position + 0.4], color="black", linewidth=2)
    ax.set_yticks(positions)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("% of its ceiling, measured in the same run (black tick: target; green met, red not)")
    ax.set_xlim(0, max(110.0, max(ratios, default=0) * 1.35))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_markdown(path: Path, generated: str) -> None:
    """Replace the generated part of the report, keeping what is written around it."""
    block = f"{BEGIN}\n{generated.rstrip()}\n{END}"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            before, rest = text.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            path.write_text(before + block + after)
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Performance\n\n{block}\n")
