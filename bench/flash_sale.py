"""The hot-product flash sale: many buyers at once on one product with few units, beside ordinary traffic.

BUYERS buyers (200) connect through Nginx (TLS, keep-alive), wait for one another, then make
ATTEMPTS one-line orders (2,000) between them as fast as they are answered, each with its own
token and a fresh Idempotency-Key. The same run is made first with every attempt on a random
product of many (the "spread" run, stock ample: all succeed), then on one product with HOT_STOCK
units (100): exactly that many must be sold (checked in the database), the rest answered 409.
Ordinary shoppers (bench/mix.lua through wrk: reads, and orders spread over the other products)
run beside both. The client is a small HTTP/1.1 client on asyncio: it counts every attempt and
its latency exactly, and is idle while it waits for answers (wrk cannot stop after N requests or
give each connection its own token).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import ATTEMPTS, BENCH, BUYERS, CATEGORIES, HOT, HOT_STOCK, SPREAD, load_average, log
from bench.measure import parse_wrk, run_pgbench
from bench.services import Postgres
from bench.stack import Stack

TIMEOUT_S = 30.0


@dataclass
class Attempt:
    status: int  # 0: no answer (connection error or time-out)
    started: float  # seconds since the buyers were released
    ms: float


@dataclass
class SaleRun:
    """What one run of ATTEMPTS saw, from the buyers' side."""

    name: str
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def statuses(self) -> Counter[int]:
        return Counter(attempt.status for attempt in self.attempts)

    def percentile_ms(self, percent: float) -> float:
        values = sorted(attempt.ms for attempt in self.attempts)
        if not values:
            return 0.0
        return values[min(len(values) - 1, max(0, round(percent / 100 * len(values)) - 1))]

    @property
    def failed(self) -> int:
        """Answers that are neither an order (201) nor a sold-out refusal (409): 5xx, 429, none."""
        return sum(count for status, count in self.statuses.items() if status not in (201, 409))

    @property
    def answers_per_second(self) -> float:
        return len(self.attempts) / self.seconds if self.seconds else 0.0

    def orders_per_second(self, sold: int | None = None) -> float:
        """Orders a second while there was stock: `sold` orders, up to the moment the last one was answered."""
        done = sorted(attempt.started + attempt.ms / 1000 for attempt in self.attempts if attempt.status == 201)
        if sold is not None:
            done = done[:sold]
        return len(done) / done[-1] if done and done[-1] > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "attempts": len(self.attempts),
            "seconds": self.seconds,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "failed": self.failed,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "p99_409_ms": SaleRun("409", [a for a in self.attempts if a.status == 409]).percentile_ms(99),
            "answers_per_second": self.answers_per_second,
            "orders_per_second": self.orders_per_second(),
        }


class Connection:
    """One keep-alive HTTP/1.1 connection (TLS when the URL is https), enough for the shop's JSON answers."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.tls = ssl.create_default_context()
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE  # the benchmark's own self-signed certificate
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
        """Send one request, read its whole answer; the status code."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed before answering")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        if chunked:
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        elif length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status


async def _run(url: str, tokens: list[str], product_of: Callable[[int], int], key_prefix: str) -> SaleRun:
    run = SaleRun(key_prefix)
    connections = [Connection(url) for _ in range(BUYERS)]
    await asyncio.gather(*(connection.open() for connection in connections))
    numbers = itertools.count()
    go = asyncio.Event()
    start = 0.0

    async def buyer(n: int, connection: Connection) -> None:
        token = tokens[n % len(tokens)]
        await go.wait()
        while (i := next(numbers)) < ATTEMPTS:
            body = json.dumps({"items": [{"product_id": product_of(i), "quantity": 1}]}).encode()
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"{key_prefix}-{i}",
            }
            began = time.perf_counter()
            try:
                status = await asyncio.wait_for(connection.request("POST", "/api/orders/", headers, body), TIMEOUT_S)
            except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                status = 0
                connection.close()
            run.attempts.append(Attempt(status, began - start, (time.perf_counter() - began) * 1000))

    tasks = [asyncio.create_task(buyer(n, connection)) for n, connection in enumerate(connections)]
    await asyncio.sleep(0.2)  # every buyer waiting on the event
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    run.seconds = time.perf_counter() - start
    for connection in connections:
        connection.close()
    return run


def sale(url: str, tokens: list[str], product_of: Callable[[int], int], key_prefix: str) -> SaleRun:
    """ATTEMPTS orders by BUYERS buyers released at once; product_of(i) is the product of attempt i."""
    return asyncio.run(_run(url, tokens, product_of, key_prefix))


def spread_over(first: int, last: int, seed: int = 14) -> Callable[[int], int]:
    chooser = random.Random(seed)
    return lambda _: chooser.randint(first, last)


class Beside:
    """Ordinary shoppers through wrk while a sale runs; stopped with SIGINT, when wrk prints its summary."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            output, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return output


# The two runs, the ceiling, the count


def run_sale(
    stack: Stack,
    tools: dict[str, str],
    pg: Postgres,
    buyers: list[tuple[int, str]],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """bench/flash_sale.py's two runs (spread, then hot) and the single-row pgbench ceiling, all three
    beside the same ordinary shoppers; the hot product's sales counted in the database."""
    tokens = [token for _, token in buyers]
    beside_connections, think_ms = 200, 1000
    command = [tools["wrk"], "-t2", f"-c{beside_connections}", "-d600s", "--latency", "--timeout=30s"]
    command += ["-s", str(BENCH / "mix.lua"), stack.nginx_warm]
    env = {
        **os.environ,
        "TOKENS": ",".join(tokens[:20]),
        "PRODUCTS": str(SPREAD),
        "CATEGORIES": str(CATEGORIES),
        "THINK_MS": str(think_ms),
        "RAMP_MS": str(think_ms),
        "CONNECTIONS": str(beside_connections),
        "THREADS": "2",
    }
    load = load_average()
    log(
        f"flash sale: {BUYERS} buyers, {ATTEMPTS:,} attempts, beside "
        f"{beside_connections} ordinary shoppers (load {load:.1f})"
    )
    beside = Beside(command, env)
    try:
        time.sleep(think_ms / 1000 + 0.5)  # every ordinary shopper arrived
        spread = sale(stack.nginx_warm, tokens, spread_over(1, SPREAD), f"spread-{os.getpid()}")
        log(f"  spread over {SPREAD:,} products: {spread.summary()}")
        hot = sale(stack.nginx_warm, tokens, lambda _: HOT, f"hot-{os.getpid()}")
        log(f"  one product, {HOT_STOCK} units: {hot.summary()}")
        # The order's SQL as it is (two lines) on products 1 and 2 only: every transaction queues for the
        # same rows, as every order of the sale does for its one.
        one_row = run_pgbench(tools, pg, buyers[0][0], max(args.seconds, 3), work, products=2)
        log(f"  pgbench on one row: {one_row['rps']:,.0f}/s")
    finally:
        output = beside.stop()
    ordinary = parse_wrk(output)
    sold_sql = "SELECT coalesce(sum(order_items.quantity), 0) FROM order_items JOIN orders ON orders.id = "
    sold_sql += f"order_items.order_id WHERE order_items.product_id = {HOT} AND orders.status <> 'cancelled'"
    sold = int(pg.sql(sold_sql))
    stock_left = int(pg.sql(f"SELECT stock FROM products WHERE id = {HOT}"))  # noqa: S608
    result = {
        "buyers": BUYERS,
        "attempts": ATTEMPTS,
        "hot_stock": HOT_STOCK,
        "spread_products": SPREAD,
        "load": load,
        "spread": spread.summary(),
        "hot": hot.summary(),
        "sold_db": sold,
        "stock_left": stock_left,
        "hot_orders_per_second": hot.orders_per_second(sold=HOT_STOCK),
        "spread_orders_per_second": spread.orders_per_second(),
        "pgbench_one_row": one_row,
        "beside": {
            "connections": beside_connections,
            "offered_rps": round(beside_connections * 1000 / think_ms),
            "rps": ordinary["rps"],
            "requests": int(ordinary["requests"]),
            "p99_ms": ordinary["p99_ms"],
            "failed": int(ordinary["non_2xx"] + ordinary["socket_errors"]),
        },
    }
    log(
        f"flash sale: sold {sold} (stock left {stock_left}); hot {result['hot_orders_per_second']:,.0f} orders/s, "
        f"spread {result['spread_orders_per_second']:,.0f}/s, one row (pgbench) {one_row['rps']:,.0f}/s"
    )
    return result
