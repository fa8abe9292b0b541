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
    cpu_limit_ms: float | None = None  # the most CPU time a request may cost (a target too)
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
    cpu_limit_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        if not self.ceiling_rps:
            return None
        return self.rps / self.ceiling_rps

    @property
    def holds(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        cpu_ok = self.cpu_limit_ms is None or (self.cpu_ms is not None and self.cpu_ms <= self.cpu_limit_ms)
        return self.ratio >= self.target and self.errors == 0 and cpu_ok


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
            cpu_limit_ms=first.cpu_limit_ms,
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


def _target_text(row: Row) -> str:
    text = f"≥ {row.target:.0%}" if row.target is not None else ""
    if row.cpu_limit_ms is not None:
        text += f", ≤ {row.cpu_limit_ms:g} ms CPU"
    return text


def verdict(ok: bool | None) -> str:
    return "holds" if ok else "**not met**"


def _target(row: Row) -> str:
    if row.target is None:
        return ""
    return f"{_target_text(row)}: {verdict(row.holds)}"


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


def sale_checks(sale: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The flash sale's figures against the issue's targets: (figure, measured, target, holds)."""
    hot = sale["hot"]
    refused = hot["statuses"].get("409", 0)
    ratio = sale["hot_orders_per_second"] / sale["spread_orders_per_second"] if sale["spread_orders_per_second"] else 0
    return [
        ("units sold (counted in the database)", f"{sale['sold_db']} (stock left {sale['stock_left']})",
         f"exactly {sale['hot_stock']}", sale["sold_db"] == sale["hot_stock"] and sale["stock_left"] == 0),
        ("the other attempts answered 409", f"{refused:,} of {hot['attempts'] - sale['sold_db']:,}", "all",
         refused == hot["attempts"] - sale["sold_db"]),
        ("5xx, other errors, no answer", f"{hot['failed']}", "0", hot["failed"] == 0),
        ("p99 of all attempts", f"{hot['p99_ms']:.0f} ms (409s: {hot['p99_409_ms']:.0f} ms)", "≤ 500 ms",
         hot["p99_ms"] <= 500),
        ("orders/s on the hot product while stock lasted, vs spread over many products",
         f"{sale['hot_orders_per_second']:,.0f} vs {sale['spread_orders_per_second']:,.0f}/s = {ratio:.0%}", "≥ 50%",
         ratio >= 0.5),
    ]  # fmt: skip


def sale_section(sale: dict[str, Any] | None) -> str:
    if not sale:
        return "The flash sale was skipped."
    hot, spread, one_row, beside = sale["hot"], sale["spread"], sale["pgbench_one_row"], sale["beside"]
    lines = [
        f"{sale['buyers']} buyers (each a token of its own) connect through Nginx (TLS, keep-alive) and are released "
        f"at once to make {sale['attempts']:,} one-line orders between them, as fast as they are answered: first "
        f"each on a random product of {sale['spread_products']:,} (ample stock), then all on one product with "
        f"{sale['hot_stock']} units; beside them {beside['connections']} ordinary shoppers (bench/mix.lua: reads, "
        f"and orders on the other products) at about {beside['offered_rps']}/s. 1-minute load average at the start "
        f"{sale['load']:.1f}.",
        "",
        "| figure | measured | target | |",
        "|---|---:|---|---|",
        *(f"| {name} | {value} | {target} | {verdict(ok)} |" for name, value, target, ok in sale_checks(sale)),
        "",
        "| run | attempts | answered in | answers/s | orders/s | statuses | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for run, orders in ((spread, spread["orders_per_second"]), (hot, sale["hot_orders_per_second"])):
        statuses = ", ".join(f"{status}: {count:,}" for status, count in run["statuses"].items())
        lines.append(
            f"| {run['name']} | {run['attempts']:,} | {run['seconds']:.1f} s | {run['answers_per_second']:,.0f} "
            f"| {orders:,.0f} | {statuses} | {run['p50_ms']:.0f} | {run['p99_ms']:.0f} |"
        )
    far = sale["hot_orders_per_second"] / one_row["rps"] if one_row["rps"] else 0
    lines += [
        "",
        f"A single row's ceiling: pgbench running the order's transaction (bench/order_transaction.sql, two lines) "
        f"with both lines always on the same two products, so that every transaction queues for the same rows as "
        f"every order of the sale does for its one, 16 clients, beside the same ordinary shoppers: "
        f"{one_row['rps']:,.0f} transactions/s (p50 "
        f"{one_row['p50_ms']:.1f} ms, p99 {one_row['p99_ms']:.1f} ms). The shop sold the hot product at "
        f"{sale['hot_orders_per_second']:,.0f} orders/s while it lasted: {far:.0%} of that ceiling. The ordinary "
        f"shoppers meanwhile: {beside['requests']:,} requests, {beside['rps']:,.0f}/s, p99 {beside['p99_ms']:.0f} ms, "
        f"{beside['failed']} failed.",
    ]
    return "\n".join(lines)


def done_when_section(rows: list[Row], mix: dict[str, Any] | None, sale: dict[str, Any] | None) -> str:
    """Every target of the issue's "Done when", each with its figure from this run and its verdict."""
    lines = ["| target | figure | verdict |", "|---|---|---|"]
    for row in rows:
        if row.target is None:
            continue
        figure = f"{_ratio(row)} ({row.rps:,.0f} of {row.ceiling_rps or 0:,.0f}/s"
        figure += f"; {_cpu(row)} ms worker CPU a request)" if row.cpu_ms is not None else ")"
        if row.errors:
            figure += f", {row.errors} errors"
        target = f"≥ {row.target:.0%} of {row.ceiling}"
        if row.cpu_limit_ms is not None:
            target += f", ≤ {row.cpu_limit_ms:g} ms of worker CPU a request"
        lines.append(f"| {row.name}: {target} | {figure} | {verdict(row.holds)} |")
    if mix:
        for name, value, target, ok in mix_checks(mix):
            lines.append(f"| the mix, {name}: {target} | {value} | {verdict(ok)} |")
    else:
        lines.append("| the mix | not run | **not met** |")
    if sale:
        for name, value, target, ok in sale_checks(sale):
            lines.append(f"| flash sale, {name}: {target} | {value} | {verdict(ok)} |")
    else:
        lines.append("| flash sale | not run | **not met** |")
    return "\n".join(lines)


MIX_RPS_TARGET = 1500


def mix_checks(mix: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The many-connections run's figures against the issue's targets: (figure, measured, target, holds)."""
    max_rss = max((worker["rss_mb"] for worker in mix["workers"]), default=0.0)
    hit = mix.get("app_cache_hit_ratio")
    return [
        ("failed requests (5xx, time-outs, connection errors; sold-out 409s apart)",
         f"{mix['failed']:,} ({mix.get('sold_out', 0):,} 409s)", "0", mix["failed"] == 0),
        ("p99 latency", f"{mix['p99_ms']:.0f} ms", "≤ 1,000 ms", mix["p99_ms"] <= 1000),
        ("requests per second served", f"{mix['rps']:,.0f} (offered ≈ {mix['offered_rps']:,})",
         f"≥ {MIX_RPS_TARGET:,}", mix["rps"] >= MIX_RPS_TARGET),
        ("the shop's catalog cache: reads reaching the app it answered",
         "not counted" if hit is None else f"{hit:.1%} ({mix['app_cache']['hit']:,.0f} hits, "
         f"{mix['app_cache']['miss']:,.0f} misses; {mix.get('distinct_pages', 0):,} distinct pages read, "
         "every page the mix can read was read once before it)", "≥ 95%",
         hit is not None and hit >= 0.95),
        ("largest gunicorn worker RSS after the run", f"{max_rss:.0f} MB", "≤ 150 MB", max_rss <= 150),
    ]  # fmt: skip
