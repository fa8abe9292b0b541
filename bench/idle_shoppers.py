"""Slow shoppers for the many-connections run: thousands of keep-alive TLS connections, each reading now and then.

wrk pays for every open connection on every turn of its event loop (its timers are a list it scans),
so 10,000 connections with think times cost wrk over a third of this machine's two cores, measured
(bench/mix.py says how much), and the load generator would take the CPU the shop is measured on.
The mix therefore gives wrk the busy shoppers and this script the slow ones: it opens CONNECTIONS
TLS connections to Nginx (a bounded number of handshakes at a time), prints `ready` when all are
open, starts reading when it gets SIGUSR1 (each connection after a random part of its think time,
then one catalog read per think time, 0.5 to 1.5 times THINK_S), and on SIGTERM stops, closes
everything and prints one JSON line: statuses, latencies' p50/p99 and errors.

    python bench/idle_shoppers.py https://127.0.0.1:8443 --connections 9000 --think-s 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import ssl
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

HANDSHAKES_AT_ONCE = 100
# The reads bench/mix.lua makes, in the same proportions (its orders are left to wrk's shoppers).
WORDS = ("wireless", "mouse", "keyboard", "compact", "lamp", "smart", "speaker", "desk", "silent", "webcam")
ORDERINGS = ("price", "-price", "name", "-created_at")


def popular(n: int) -> int:
    """1..n, log-uniform, as bench/mix.lua draws them."""
    return min(n, math.floor(n ** random.random()))


def read_path(products: int, categories: int) -> str:
    r = random.random() * 0.95  # mix.lua's read shares, without its orders
    if r < 0.35:
        return f"/api/products/?page={popular(500)}"
    if r < 0.55:
        return f"/api/products/{popular(products)}/"
    if r < 0.75:
        return (
            f"/api/products/?category={random.randint(1, categories)}&ordering={random.choice(ORDERINGS)}"
            f"&page={popular(25)}"
        )
    if r < 0.85:
        return f"/api/products/?search={random.choice(WORDS)}&in_stock=true"
    if r < 0.90:
        low = random.randint(0, 40) * 10
        return f"/api/products/?min_price={low}&max_price={low + 50}&page={popular(10)}"
    return "/api/categories/"


class Shoppers:
    def __init__(self, args: argparse.Namespace) -> None:
        parts = urlsplit(args.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.args = args
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE  # the run's own self-signed certificate, on loopback
        self.go = asyncio.Event()
        self.stop = asyncio.Event()
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    async def connect(self, gate: asyncio.Semaphore) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with gate:
            try:
                return await asyncio.open_connection(self.host, self.port, ssl=self.context)
            except OSError as exc:
                self.errors[f"connect: {type(exc).__name__}"] += 1
                return None

    async def shop(self, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        reader, writer = streams
        think = self.args.think_s
        await self.go.wait()
        if await self._pause(random.uniform(0, think)):
            writer.close()
            return
        while not self.stop.is_set():
            path = read_path(self.args.products, self.args.categories)
            started = time.perf_counter()
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
                status = await asyncio.wait_for(self._answer(reader), self.args.timeout_s)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                self.errors[type(exc).__name__] += 1
                break
            self.statuses[status] += 1
            self.latencies.append((time.perf_counter() - started) * 1000)
            if await self._pause(think * random.uniform(0.5, 1.5)):
                break
        writer.close()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, or return True at once when told to stop."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            return False
        return True

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> str:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        return lines[0].split(" ", 2)[1]

    async def run(self) -> dict[str, object]:
        gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
        opened = await asyncio.gather(*(self.connect(gate) for _ in range(self.args.connections)))
        connections = [streams for streams in opened if streams is not None]
        print(f"ready {len(connections)}", flush=True)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.go.set)
        loop.add_signal_handler(signal.SIGTERM, self._finish)
        tasks = [asyncio.create_task(self.shop(streams)) for streams in connections]
        await self.stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        latencies = sorted(self.latencies)

        def percentile(share: float) -> float:
            return latencies[min(len(latencies) - 1, int(len(latencies) * share))] if latencies else 0.0

        return {
            "connections": len(connections),
            "requests": len(latencies),
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
        }

    def _finish(self) -> None:
        self.go.set()
        self.stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=9000)
    parser.add_argument("--think-s", type=float, default=50.0)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--products", type=int, default=9999)
    parser.add_argument("--categories", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(Shoppers(args).run())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
