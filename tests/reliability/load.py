"""A steady mixed load for the fault tests and the soak run: catalog reads, orders, and a probe.

Threads, each with its own HTTP session, for a bounded time:
- readers: anonymous catalog GETs (list pages with filters, product details, categories);
- buyers: orders of 1-2 random products, each with a fresh `Idempotency-Key`, retried with the
  same key and body on a network error, a timeout, 502/503/504, 429 or a 409 "still being
  processed", as a careful client would, until it is answered or the order's deadline passes;
- a probe: the buyer's own order list every 100 ms, a request that always needs the database.

Every attempt is recorded (its kind, status or exception, start and end), and every logical
order (key, lines, the answer the client finally had), so a test can check them against the
database afterwards and measure when the service recovered.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

RETRY_STATUSES = {429, 502, 503, 504}
IN_FLIGHT = "still being processed"


@dataclass
class Attempt:
    kind: str  # "read", "order", "probe"
    outcome: str  # an HTTP status ("200") or the exception's class name ("ConnectionError")
    started: float
    ended: float

    @property
    def ok(self) -> bool:
        return self.outcome in {"200", "201", "304"}


@dataclass
class PlacedOrder:
    """One order the client meant to place, with every attempt it took."""

    buyer: int  # user id
    key: str
    lines: list[dict[str, int]]
    outcomes: list[str] = field(default_factory=list)
    order_id: int | None = None
    final: str = "pending"  # "created", "refused" (a 4xx that is not retried), "gave_up"
    replayed: bool = False


class Load:
    """Run the load in threads until `stop()`; then read `attempts`, `orders` and `summary()`."""

    def __init__(
        self,
        base: str,
        buyers: Sequence[Any],
        products: Sequence[int],
        *,
        readers: int = 2,
        probe: bool = True,
        verify: Any = True,
        timeout: float = 10.0,
        order_deadline: float = 30.0,
        pause: float = 0.02,
        seed: int = 7,
    ) -> None:
        self.base = base.rstrip("/")
        self.buyers = list(buyers)
        self.products = list(products)
        self.readers = readers
        self.probe = probe
        self.verify = verify
        self.timeout = timeout
        self.order_deadline = order_deadline
        self.pause = pause
        self.seed = seed
        self.attempts: list[Attempt] = []
        self.orders: list[PlacedOrder] = []
        self.reads_failed = 0
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # ---- running --------------------------------------------------------------------------

    def start(self) -> Load:
        self.marks["start"] = time.monotonic()
        targets = [(self._reader, n) for n in range(self.readers)]
        targets += [(self._buyer, n) for n in range(len(self.buyers))]
        if self.probe and self.buyers:
            targets.append((self._prober, 0))
        for target, n in targets:
            thread = threading.Thread(target=target, args=(n,), daemon=True, name=f"{target.__name__}-{n}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            # A buyer finishes the order in hand (bounded by order_deadline and timeout).
            thread.join(self.order_deadline + self.timeout + 5)
        self.marks["stop"] = time.monotonic()

    def mark(self, name: str) -> float:
        self.marks[name] = now = time.monotonic()
        return now

    def run_for(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the clients ----------------------------------------------------------------------

    def _session(self) -> requests.Session:
        return requests.Session()

    def _send(self, session: requests.Session, kind: str, method: str, path: str, **kwargs: Any) -> Any:
        """One attempt: the response, or the exception's class name."""
        started = time.monotonic()
        try:
            # `verify` per request: a session's own loses to REQUESTS_CA_BUNDLE in the environment.
            response = session.request(method, self.base + path, timeout=self.timeout, verify=self.verify, **kwargs)
        except requests.RequestException as exc:
            outcome: Any = type(exc).__name__
            label = outcome
        else:
            outcome = response
            label = str(response.status_code)
            if response.status_code == 503 and "Retry-After" not in response.headers:
                label = "503 without Retry-After"
        with self._lock:
            self.attempts.append(Attempt(kind, label, started, time.monotonic()))
        return outcome

    def _reader(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        session = self._session()
        while not self._stop.is_set():
            path = rng.choice(
                [
                    f"/api/products/?page={rng.randint(1, 2)}",
                    "/api/products/?ordering=-price&page_size=5",
                    f"/api/products/{rng.choice(self.products)}/",
                    "/api/products/?min_price=12&max_price=20",
                    "/api/categories/",
                ]
            )
            self._retrying(session, rng, "read", "GET", path, deadline=time.monotonic() + self.order_deadline)
            self._stop.wait(self.pause)

    def _prober(self, n: int) -> None:
        session = self._session()
        headers = self.buyers[0].headers
        while not self._stop.is_set():
            self._send(session, "probe", "GET", "/api/orders/?page_size=1", headers=headers)
            self._stop.wait(0.1)

    def _buyer(self, n: int) -> None:
        rng = random.Random(self.seed * 2000 + n)
        session = self._session()
        buyer = self.buyers[n]
        while not self._stop.is_set():
            lines = [
                {"product_id": product, "quantity": rng.randint(1, 3)}
                for product in sorted(rng.sample(self.products, rng.randint(1, 2)))
            ]
            order = PlacedOrder(buyer.user_id, str(uuid.uuid4()), lines)
            with self._lock:
                self.orders.append(order)
            self._place(session, rng, buyer, order)
            if rng.random() < 0.2:
                self._retrying(
                    session, rng, "read", "GET", "/api/orders/", headers=buyer.headers, deadline=time.monotonic() + 10
                )
            self._stop.wait(self.pause)

    def _place(self, session: requests.Session, rng: random.Random, buyer: Any, order: PlacedOrder) -> None:
        headers = {**buyer.headers, "Idempotency-Key": order.key}
        deadline = time.monotonic() + self.order_deadline
        for attempt in range(1000):
            outcome = self._send(session, "order", "POST", "/api/orders/", json={"items": order.lines}, headers=headers)
            label = outcome if isinstance(outcome, str) else str(outcome.status_code)
            order.outcomes.append(label)
            if not isinstance(outcome, str):
                if outcome.status_code == 201:
                    order.order_id = outcome.json()["id"]
                    order.replayed = outcome.headers.get("Idempotent-Replayed") == "true"
                    order.final = "created"
                    return
                if not _retryable(outcome):
                    order.final = "refused"
                    return
            if time.monotonic() > deadline:
                order.final = "gave_up"
                return
            time.sleep(_backoff(outcome, attempt, rng))

    def _retrying(self, session: requests.Session, rng: random.Random, kind: str, method: str, path: str, **kw: Any):
        """A GET retried like an order; one that never succeeds is counted in `reads_failed`."""
        deadline = kw.pop("deadline")
        for attempt in range(1000):
            outcome = self._send(session, kind, method, path, **kw)
            if not isinstance(outcome, str) and not _retryable(outcome):
                break
            if time.monotonic() > deadline or self._stop.is_set():
                break
            time.sleep(_backoff(outcome, attempt, rng))
        if isinstance(outcome, str) or outcome.status_code not in {200, 304}:
            with self._lock:
                self.reads_failed += 1
        return outcome

    # ---- figures --------------------------------------------------------------------------

    def failures(self, after: float | None = None) -> list[Attempt]:
        """Attempts that did not succeed (a 4xx other than 304 counts too), ending after `after`."""
        return [a for a in self.attempts if not a.ok and (after is None or a.ended > after)]

    def recovery_seconds(self, fault_end: float) -> float:
        """From the fault's end to the end of the last failed attempt (0 when none failed after it)."""
        late = self.failures(after=fault_end)
        return max(a.ended for a in late) - fault_end if late else 0.0

    def summary(self, fault_end: float | None = None) -> dict[str, Any]:
        statuses = Counter(a.outcome for a in self.attempts)
        retried = sum(1 for order in self.orders if len(order.outcomes) > 1)
        finals = Counter(order.final for order in self.orders)
        return {
            "requests": len(self.attempts),
            "by_kind": dict(Counter(a.kind for a in self.attempts)),
            "statuses": dict(statuses),
            "client_errors": {key: value for key, value in statuses.items() if key not in {"200", "201", "304"}},
            "reads_failed": self.reads_failed,
            "orders": len(self.orders),
            "orders_created": finals["created"],
            "orders_refused": finals["refused"],
            "orders_gave_up": finals["gave_up"],
            "orders_retried": retried,
            "orders_replayed": sum(1 for order in self.orders if order.replayed),
            "seconds": round(self.marks.get("stop", time.monotonic()) - self.marks["start"], 1),
            "recovery_s": round(self.recovery_seconds(fault_end), 2) if fault_end is not None else 0.0,
        }


def _retryable(response: requests.Response) -> bool:
    if response.status_code in RETRY_STATUSES:
        return True
    return response.status_code == 409 and IN_FLIGHT in response.text


def _backoff(outcome: Any, attempt: int, rng: random.Random) -> float:
    """Short exponential backoff with jitter, at most 1 s (a Retry-After shortens nothing, caps it)."""
    wait = min(0.1 * 2**attempt, 1.0)
    if not isinstance(outcome, str):
        retry_after = outcome.headers.get("Retry-After", "")
        if retry_after.isdigit():
            wait = min(wait, float(retry_after))
    return wait * (0.5 + rng.random())
