"""The response cache of the catalog: serialized bytes keyed by a catalog version, invalidated in O(1).

What is kept: the exact bytes of a successful (200) catalog GET, with its ETag and X-Pagination,
under a key made of the path and the query parameters that select the page. The lookup runs
before the request's arguments are parsed and before any SQL or serialization; only 200s are
stored, so a malformed query never reaches the store.

Freshness: each entry carries the catalog version it was built under. A write commits, then bumps
the version (`invalidate_catalog`), so every older entry stops matching at once, whatever the
number of entries. A reader that raced the write stored its page under the older version, so it
can never be served after the bump; a write answered 2xx is therefore visible on the next GET.

Where the version lives:
- Redis (`REDIS_URL`): one key shared by every process. A cached GET costs one round trip: an MGET
  of the version and the entry, which the rate limit check sends in its own round trip when it
  uses the same Redis (`shop.core.readahead`). The entry's key has no version in it, so a stale
  entry is overwritten in place rather than left behind.
- In-process (no `REDIS_URL`): a counter in this process. That is exact for a single process
  (`make run` serves with `flask run`), and wrong for several: under gunicorn the cache is
  therefore off unless `REDIS_URL` is set. Several workers need Redis to cache.

Redis unavailable: reads fall back to the database (counted in `shop_cache_errors_total`, logged)
and Redis is left alone for `CATALOG_CACHE_RETRY_SECONDS` (1 s), so an outage costs at most one
0.25 s socket timeout per process per second. An invalidation that could not reach Redis is owed,
and paid before this process next reads from Redis.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from functools import wraps
from typing import Any, ParamSpec
from urllib.parse import urlencode

from flask import Flask, Response, current_app, request
from redis.exceptions import RedisError

from shop.core import readahead
from shop.core.metrics import CACHE_ERRORS, CACHE_REQUESTS
from shop.extensions import cache

logger = logging.getLogger(__name__)

P = ParamSpec("P")
VERSION_KEY = "catalog:version"
# A key longer than this is hashed: search texts may be long, Redis keys should not be.
MAX_KEY_LENGTH = 200
UNAVAILABLE = (RedisError, OSError)
HIT = CACHE_REQUESTS.labels(result="hit")
MISS = CACHE_REQUESTS.labels(result="miss")


class CachedResponse:
    """A 200 catalog response as stored: ETag, X-Pagination and body bytes."""

    __slots__ = ("body", "etag", "pagination")

    def __init__(self, etag: str, pagination: str, body: bytes) -> None:
        self.etag = etag
        self.pagination = pagination
        self.body = body

    @classmethod
    def of(cls, response: Response) -> CachedResponse:
        body = response.get_data()
        pagination = response.headers.get("X-Pagination", "")
        digest = hashlib.blake2b(pagination.encode() + b"\n" + body, digest_size=16).hexdigest()
        return cls(f'"{digest}"', pagination, body)

    def encode(self, version: int) -> bytes:
        return b"%d\n%s\n%s\n" % (version, self.etag.encode(), self.pagination.encode()) + self.body

    @classmethod
    def decode(cls, raw: bytes) -> tuple[int, CachedResponse]:
        version, etag, pagination, body = raw.split(b"\n", 3)
        return int(version), cls(etag.decode(), pagination.decode(), body)

    def response(self) -> Response:
        if _not_modified(self.etag):
            return self.not_modified()
        response = current_app.response_class(self.body, mimetype="application/json")
        response.headers["ETag"] = self.etag
        if self.pagination:
            response.headers["X-Pagination"] = self.pagination
        return response

    def not_modified(self) -> Response:
        return current_app.response_class(status=304, headers={"ETag": self.etag})


def _not_modified(etag: str) -> bool:
    return "If-None-Match" in request.headers and request.if_none_match.contains_weak(etag.strip('"'))


class CatalogCache:
    """One per app: where the catalog version lives, and whether the store may be used now."""

    def __init__(self, app: Flask) -> None:
        self.backend = app.extensions["cache"][cache]
        self.shared = hasattr(self.backend, "_write_client")  # cachelib's RedisCache
        self.location = readahead.location(self.backend._read_client) if self.shared else None
        self.enabled = bool(app.config.get("CATALOG_CACHE", True)) and (self.shared or not _several_processes())
        if app.config.get("CATALOG_CACHE", True) and not self.enabled:
            logger.warning("catalog cache off: several worker processes need REDIS_URL to share one cache")
        self.timeout = int(app.config.get("CACHE_DEFAULT_TIMEOUT", 300))
        self.retry_seconds = float(app.config.get("CATALOG_CACHE_RETRY_SECONDS", 1.0))
        self._local_version = 0
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._owed_bump = False

    def lookup(self, key: str) -> tuple[int | None, bytes | None]:
        """The current version and the stored entry; (None, None) when the store cannot be used."""
        if not self.enabled:
            return None, None
        if not self.shared:
            return self._local_version, self.backend.get(key)
        if time.monotonic() < self._down_until:
            return None, None
        try:
            if self._owed_bump:
                self._bump_shared()
            version, raw = self._read(key)
            if version is None:
                version = self._start_shared_version()
            return int(version), raw
        except UNAVAILABLE as exc:
            self._failed("read", exc)
            return None, None

    def _read(self, key: str) -> list[Any]:
        """The version and the entry: fetched ahead by the rate limit check, else one MGET now."""
        prefix = self.backend._get_prefix()
        ahead = readahead.take([prefix + VERSION_KEY, prefix + key])
        if ahead is None:
            return self.backend.get_many(VERSION_KEY, key)
        return [self.backend.serializer.loads(value) for value in ahead]

    def readable_ahead(self) -> bool:
        """Whether a lookup now would read Redis right away (no owed invalidation, no recent outage)."""
        return self.enabled and self.shared and not self._owed_bump and time.monotonic() >= self._down_until

    def store(self, key: str, version: int, entry: CachedResponse) -> None:
        try:
            self.backend.set(key, entry.encode(version), timeout=self.timeout)
        except UNAVAILABLE as exc:
            self._failed("write", exc)

    def bump(self) -> None:
        """Make every stored entry stale."""
        if not self.shared:
            with self._lock:
                self._local_version += 1
            return
        self._owed_bump = True
        if time.monotonic() < self._down_until:
            return
        try:
            self._bump_shared()
        except UNAVAILABLE as exc:
            self._failed("invalidation", exc)

    def _bump_shared(self) -> None:
        client, name = self._raw(VERSION_KEY)
        pipe = client.pipeline(transaction=False)
        pipe.set(name, _fresh_version(), nx=True)
        pipe.incr(name)
        pipe.execute()
        self._owed_bump = False

    def _start_shared_version(self) -> int:
        """After a Redis restart the version is gone: start one that no surviving entry can carry."""
        client, name = self._raw(VERSION_KEY)
        pipe = client.pipeline(transaction=False)
        pipe.set(name, _fresh_version(), nx=True)
        pipe.get(name)
        return int(pipe.execute()[1])

    def _raw(self, key: str) -> tuple[Any, str]:
        return self.backend._write_client, self.backend._get_prefix() + key

    def _failed(self, operation: str, exc: Exception) -> None:
        CACHE_ERRORS.inc()
        self._down_until = time.monotonic() + self.retry_seconds
        logger.warning("catalog cache %s failed, using the database: %s", operation, exc)


def _fresh_version() -> int:
    # Microseconds since the epoch: larger than any version counted up from an earlier start.
    return time.time_ns() // 1000


def _several_processes() -> bool:
    """Served by gunicorn, whose workers are separate processes that cannot share a local cache."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn")


def catalog_cache() -> CatalogCache:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    store = app.extensions.get("catalog_cache")
    if store is None:
        store = app.extensions.setdefault("catalog_cache", CatalogCache(app))
    return store


def invalidate_catalog() -> None:
    """Make every cached catalog response stale; call after a committed write that changes products."""
    catalog_cache().bump()


def _key(namespace: str, path_args: dict[str, Any], params: Sequence[str]) -> str:
    key = "catalog:" + ":".join([namespace, *(str(value) for value in path_args.values())])
    args = request.args
    if params and args:
        key += "?" + urlencode([(name, value) for name in params for value in args.getlist(name)])
    if len(key) > MAX_KEY_LENGTH:
        key = f"catalog:{namespace}#{hashlib.blake2b(key.encode(), digest_size=20).hexdigest()}"
    return key


def cached_response(namespace: str, params: Sequence[str] = ()) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
    """Serve a catalog GET from the cache, or run the view and store its 200; ETag and 304 either way.

    Apply it outermost (above flask-smorest's decorators), so a hit skips argument parsing too.
    `params` are the query parameters that select the response: any other is not part of the key.
    """

    def decorator(view: Callable[P, Any]) -> Callable[P, Any]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            store = catalog_cache()
            key = _key(namespace, kwargs, params)
            version, raw = store.lookup(key)
            if raw is not None:
                try:
                    stored_version, entry = CachedResponse.decode(raw)
                except ValueError:
                    stored_version = None
                if stored_version == version:
                    HIT.inc()
                    return entry.response()
            if store.enabled:
                MISS.inc()
            response = view(*args, **kwargs)
            if response.status_code != 200:
                return response
            entry = CachedResponse.of(response)
            if version is not None:
                store.store(key, version, entry)
            if _not_modified(entry.etag):
                return entry.not_modified()
            response.headers["ETag"] = entry.etag
            return response

        wrapper._catalog_cache = (namespace, tuple(params))  # type: ignore[attr-defined] # for _keys_ahead
        # Document ETag, If-None-Match and 304 the way flask-smorest's own `etag` decorator does.
        wrapper._apidoc = deepcopy(getattr(view, "_apidoc", {}))  # type: ignore[attr-defined]
        wrapper._apidoc["etag"] = True  # type: ignore[attr-defined]
        return wrapper

    return decorator


@readahead.provider
def _keys_ahead() -> tuple[readahead.Location, list[str]] | None:
    """A cached catalog GET will read the catalog version and its entry: the rate limit check may fetch them."""
    if request.method not in ("GET", "HEAD") or request.endpoint is None:
        return None
    view_class = getattr(current_app.view_functions.get(request.endpoint), "view_class", None)
    spec = getattr(getattr(view_class, "get", None), "_catalog_cache", None)
    if spec is None:
        return None
    store = catalog_cache()
    if not store.readable_ahead():
        return None
    prefix = store.backend._get_prefix()
    key = _key(spec[0], request.view_args or {}, spec[1])
    return store.location, [prefix + VERSION_KEY, prefix + key]  # type: ignore[return-value]
