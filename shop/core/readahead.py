"""Redis reads a request is about to make, sent in the rate limit check's round trip.

The rate limiter talks to Redis first, before the view runs. A part of the shop that knows which
Redis keys the request will read (the catalog cache: the catalog version and the page's entry)
registers a provider; the limiter sends an MGET of those keys in the same pipeline as its own
increment and leaves the raw answers on the request, where the reader takes them instead of
asking Redis again. A cached catalog page thus costs one round trip to Redis, as bare Flask
reading the same bytes does.

Nothing changes in what is read or when it counts: the keys are read at the same moment the
limit is checked, for this request only, and a reader that finds no answer reads Redis itself.
Keys are only sent along when the reader's Redis is the limiter's (same server and database).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import request

# Where a Redis client connects: (host, port, unix path, db). Keys only travel between equal ones.
Location = tuple[Any, Any, Any, Any]
Provider = Callable[[], tuple[Location, Sequence[str]] | None]

_providers: list[Provider] = []
_ANSWERS = "shop.readahead"


def provider(function: Provider) -> Provider:
    """Register a function returning the (location, keys) this request will read, or None."""
    _providers.append(function)
    return function


def location(client: Any) -> Location:
    kwargs = client.connection_pool.connection_kwargs
    return (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db", 0))


def wanted(at: Location) -> list[str]:
    """The keys this request will read from the Redis at `at`, for the limiter to fetch with its check."""
    keys: list[str] = []
    for function in _providers:
        found = function()
        if found is not None and found[0] == at:
            keys.extend(found[1])
    return keys


def keep(keys: Sequence[str], values: Sequence[bytes | None]) -> None:
    """Store the answers (raw bytes, None for a missing key) on this request."""
    request.environ[_ANSWERS] = dict(zip(keys, values, strict=True))


def take(keys: Sequence[str]) -> list[bytes | None] | None:
    """The answers fetched ahead for exactly these keys, once; None when they were not fetched."""
    answers = request.environ.get(_ANSWERS)
    if not answers or any(key not in answers for key in keys):
        return None
    return [answers.pop(key) for key in keys]
