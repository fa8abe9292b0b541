"""Development only: a `Server-Timing` header with the SQL statements, database, cache and view time of a request.

Any browser's developer tools show the header (Network → the request → Timing), e.g.
`Server-Timing: db;desc="3 queries";dur=1.84, cache;desc="1 call";dur=0.21, view;dur=6.02, total;dur=7.15`.
A request that runs more statements than `DEV_QUERY_BUDGET` logs a warning, which is where an N+1 shows up.

Nothing of this is installed unless `APP_ENV=development`: a production app has no listener, hook or wrapper,
so its hot path does not pay for it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request, request_started
from sqlalchemy import event

from shop.extensions import cache, db
from shop.infra import roundtrip

logger = logging.getLogger(__name__)

# The methods of a cache backend (cachelib) that reach the store.
CACHE_METHODS = ("get", "get_many", "get_dict", "set", "set_many", "add", "delete", "delete_many", "has", "inc", "dec")


@dataclass
class RequestTiming:
    """What one request spent, in seconds."""

    started: float
    queries: int = 0
    db: float = 0.0
    cache_calls: int = 0
    cache: float = 0.0
    cache_depth: int = 0
    view: float = 0.0

    def header(self, now: float) -> str:
        queries = f"{self.queries} {'query' if self.queries == 1 else 'queries'}"
        calls = f"{self.cache_calls} {'call' if self.cache_calls == 1 else 'calls'}"
        return ", ".join(
            (
                f'db;desc="{queries}";dur={self.db * 1000:.2f}',
                f'cache;desc="{calls}";dur={self.cache * 1000:.2f}',
                f"view;dur={self.view * 1000:.2f}",
                f"total;dur={(now - self.started) * 1000:.2f}",
            )
        )


def enabled(app: Flask) -> bool:
    return app.config.get("APP_ENV") == "development"


def init_devtools(app: Flask) -> None:
    """In development, time every request and answer with `Server-Timing`; elsewhere install nothing."""
    if not enabled(app):
        return
    with app.app_context():
        for engine in db.engines.values():
            event.listen(engine, "before_cursor_execute", _before_cursor_execute)
            event.listen(engine, "after_cursor_execute", _after_cursor_execute)
    _time_cache_backend(app.extensions["cache"][cache])
    roundtrip.observe_clients(app, _time_redis_client)  # the catalog cache's and rate limit's own clients
    request_started.connect(_start_timing, app)
    app.dispatch_request = _timed(app.dispatch_request)  # type: ignore[method-assign]
    app.after_request(_add_server_timing)
    app.extensions["devtools"] = True


def current_timing() -> RequestTiming | None:
    """The timing of the request being served, or None outside a request."""
    return g.get("devtools_timing") if has_request_context() else None


def _start_timing(sender: Flask, **extra: Any) -> None:
    g.devtools_timing = RequestTiming(started=perf_counter())


def _timed(dispatch_request: Callable[[], Any]) -> Callable[[], Any]:
    @functools.wraps(dispatch_request)
    def timed_dispatch_request() -> Any:
        started = perf_counter()
        try:
            return dispatch_request()
        finally:
            timing = current_timing()
            if timing is not None:
                timing.view += perf_counter() - started

    return timed_dispatch_request


def _before_cursor_execute(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
    timing = current_timing()
    if timing is not None:
        timing.queries += 1
        conn.info.setdefault("devtools_started", []).append(perf_counter())


def _after_cursor_execute(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
    timing = current_timing()
    started = conn.info.get("devtools_started")
    if timing is not None and started:
        timing.db += perf_counter() - started.pop()


def _time_cache_backend(backend: Any) -> None:
    """Wrap this app's cache backend instance (not its class) so each call counts once, nested calls included."""
    for name in CACHE_METHODS:
        method = getattr(backend, name, None)
        if method is not None:
            setattr(backend, name, _timed_cache_call(method))


def _time_redis_client(client: Any) -> None:
    """Count each command a Redis client sends on its own, and each round trip's batch, as one cache call."""
    client.execute_command = _timed_cache_call(client.execute_command)
    roundtrip.wrap_batches(client, _timed_cache_call)


def _timed_cache_call(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        timing = current_timing()
        if timing is None or timing.cache_depth:
            return method(*args, **kwargs)
        timing.cache_depth += 1
        started = perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            timing.cache_depth -= 1
            timing.cache_calls += 1
            timing.cache += perf_counter() - started

    return timed


def _add_server_timing(response: Response) -> Response:
    timing = current_timing()
    if timing is None:
        return response
    response.headers["Server-Timing"] = timing.header(perf_counter())
    budget = current_app.config["DEV_QUERY_BUDGET"]
    if timing.queries > budget:
        logger.warning(
            "%s %s ran %d SQL statements, over the budget of %d (DEV_QUERY_BUDGET)",
            request.method,
            request.full_path.rstrip("?"),
            timing.queries,
            budget,
        )
    return response
