"""The catalog's response cache: per-product versions, one Redis round trip a hit, never stale after a write.

What is kept: the exact bytes of a successful (200) catalog GET, with its ETag and X-Pagination,
under a key made of the path and the query parameters that select the page (hashed when long).
The lookup runs before the request's arguments are parsed and before any SQL or serialization;
only 200s are stored, so a malformed query never reaches the store. `If-None-Match` with the
current ETag answers 304, on a hit or a miss.

Freshness: one Redis hash, `catalog:state`, says what changed since an entry was built:
- `epoch`: set once, from Redis' clock, when the hash is missing (a Redis restart, an eviction,
  someone deleting it): an entry built before carries another epoch and never matches again;
- `global`: bumped by every staff write to the catalog (products, categories): every entry stops
  matching (`catalog_changed`);
- `seq`: a counter, and one field per product id holding the `seq` of its last stock change;
- `members`: bumped when a product's stock crosses zero (in stock ⇄ sold out), which changes the
  set a page filtered by `in_stock` shows and counts.

An entry records the `epoch`, `global` and `seq` (and `members`, only for a page filtered by
`in_stock`) read before its database read, and the ids of the products it shows. The lookup is
one Lua script (`LOOKUP`, sent with EVALSHA in the request's round trip, `shop.infra.roundtrip`,
beside the rate limit's increment): it reads the entry and the state fields it needs and answers
`{1, entry}` only when epoch, global (and members) are equal and every shown product's field is
<= the entry's `seq`; else `{0, epoch, global, members, seq}`, the state the miss path stores its
entry under. An order changes the stock of a few products (`stock_changed`, after its commit: one
script, `BUMP`, doing HINCRBY seq, HSET of each product to the new seq, and HINCRBY members when a
stock crossed zero), so a cached page that shows none of them, and is not filtered by `in_stock`,
stays a hit.

Why a write is seen by the next read: the write commits, then bumps, then answers. A reader that
raced it read the state before its database read; if its database read missed the write, the write's
bump came later and is larger than the `seq` (or `global`) the reader's entry records, so that entry
is never served after the bump. (An entry built from the new data but recorded under the older
state is a harmless extra miss.)

Failure cases:
- Redis unavailable (refused, timeout, frozen): reads go to the database (counted in
  `shop_cache_errors_total`, logged) and Redis is left alone for `CATALOG_CACHE_RETRY_SECONDS`
  (1 s), so an outage costs at most one 0.25 s socket timeout per process a second. A bump that
  could not reach Redis is owed, and paid (as a `global` bump) before this process reads from
  Redis again.
- Redis restarted empty, or `catalog:state` evicted or deleted while entries survive: the next
  lookup sets a new epoch, so no surviving entry matches. (Redis restarted from a snapshot holding
  both an old state and old entries: the bumps since the snapshot are lost, so those entries can
  be stale until their TTL, `CACHE_TIMEOUT`, ends. Run the cache's Redis without persistence, or
  delete `catalog:state` after restoring one.)
- A crash between a commit and its bump: an order's bump is repeated by the outbox relay when it
  publishes the order (`stock_changed` with the recorded changes, or `products_touched`), so the
  window is the relay's interval; a staff write's window is the entry TTL.
- Two instances (or workers) on one Redis share the state and see each other's bumps at once. One
  that cannot reach Redis while the others can still serves from the database, but its owed bump
  reaches the others only when it reaches Redis again: bounded by the TTL.
- Entries evicted: a miss. Entry bytes that do not parse (another writer): a miss, overwritten.

Without Redis (no `REDIS_URL`): the same state in this process, checked the same way in Python,
entries in Flask-Caching's in-process store. Exact for a single process (`make run` serves with
`flask run`), wrong for several: under gunicorn the cache is off unless `REDIS_URL` is set.

Counted in `shop_cache_requests_total{kind="list|detail|categories|category", result="hit|miss"}`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import deepcopy
from functools import wraps
from typing import Any, NamedTuple, ParamSpec
from urllib.parse import urlencode

import orjson
from flask import Flask, Response, current_app, request
from redis.exceptions import NoScriptError

from shop.core.metrics import CACHE_ERRORS, CACHE_REQUESTS
from shop.extensions import cache
from shop.infra import roundtrip

logger = logging.getLogger(__name__)

P = ParamSpec("P")
STATE_KEY = "catalog:state"
# Where each kind of page is kept: `catalog:<namespace>[:<path args>][?<selecting parameters>]`.
NAMESPACES = {"list": "products", "detail": "product", "categories": "categories", "category": "category"}
# A key longer than this is hashed: search texts may be long, Redis keys should not be.
MAX_KEY_LENGTH = 200

# KEYS[1] the entry, KEYS[2] the state hash. An entry is "<epoch> <global> <members|-> <seq> <ids>\n"
# followed by the ETag, X-Pagination and body lines. Answers {1, entry} when it is current, else
# {0, epoch, global, members, seq}: the state a miss records before its database read.
LOOKUP = """
local raw = redis.call("GET", KEYS[1])
local epoch, global, members, seq, ids
if raw then
    local newline = string.find(raw, "\\n", 1, true)
    if newline then
        epoch, global, members, seq, ids = string.match(
            string.sub(raw, 1, newline - 1), "^(%d+) (%d+) ([%d-]+) (%d+) ([%d,]*)$")
    end
end
local fields = {"epoch", "global", "members", "seq"}
if epoch then
    for id in string.gmatch(ids, "%d+") do fields[#fields + 1] = id end
end
local state = redis.call("HMGET", KEYS[2], unpack(fields))
local current = state[1]
if not current then
    local now = redis.call("TIME")
    redis.call("HSETNX", KEYS[2], "epoch", now[1] .. string.format("%06d", tonumber(now[2])))
    current = redis.call("HGET", KEYS[2], "epoch")
elseif epoch == current and (state[2] or "0") == global and (members == "-" or (state[3] or "0") == members) then
    local recorded = tonumber(seq)
    local fresh = true
    for i = 5, #state do
        if state[i] and tonumber(state[i]) > recorded then
            fresh = false
            break
        end
    end
    if fresh then return {1, raw} end
end
return {0, current, state[2] or "0", state[3] or "0", state[4] or "0"}
"""

# KEYS[1] the state hash; ARGV[1] "1" when a stock crossed zero, ARGV[2..] the product ids.
# Answers the new seq.
BUMP = """
local seq = redis.call("HINCRBY", KEYS[1], "seq", 1)
if #ARGV > 1 then
    local values = {}
    for i = 2, #ARGV do
        values[#values + 1] = ARGV[i]
        values[#values + 1] = seq
    end
    redis.call("HSET", KEYS[1], unpack(values))
end
if ARGV[1] == "1" then redis.call("HINCRBY", KEYS[1], "members", 1) end
return seq
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


class State(NamedTuple):
    """The catalog state a lookup read, which the entry built after it records."""

    epoch: str
    global_: str
    members: str
    seq: int


class Entry:
    """A 200 catalog response as stored, with the state it was built under and the products it shows."""

    __slots__ = ("body", "epoch", "etag", "global_", "ids", "members", "pagination", "seq")

    def __init__(
        self, state: State, depends_on_members: bool, ids: Sequence[int], etag: str, pagination: str, body: bytes
    ) -> None:
        self.epoch = state.epoch
        self.global_ = state.global_
        self.members = state.members if depends_on_members else None
        self.seq = state.seq
        self.ids = tuple(ids)
        self.etag = etag
        self.pagination = pagination
        self.body = body

    def encode(self) -> bytes:
        ids = ",".join(map(str, self.ids))
        header = f"{self.epoch} {self.global_} {self.members or '-'} {self.seq} {ids}\n{self.etag}\n{self.pagination}\n"
        return header.encode() + self.body


def etag_of(pagination: str, body: bytes) -> str:
    return '"' + hashlib.blake2b(pagination.encode() + b"\n" + body, digest_size=16).hexdigest() + '"'


def _not_modified(etag: str) -> bool:
    return "HTTP_IF_NONE_MATCH" in request.environ and request.if_none_match.contains_weak(etag.strip('"'))


def _answer(etag: str, pagination: str, body: bytes) -> Response:
    if _not_modified(etag):
        return current_app.response_class(status=304, headers={"ETag": etag})
    headers = [("ETag", etag), ("X-Pagination", pagination)] if pagination else [("ETag", etag)]
    return current_app.response_class(body, headers=headers, mimetype="application/json")


class RedisCatalog:
    """The state and entries in Redis, shared by every process; whether Redis may be used now."""

    def __init__(self, app: Flask, url: str) -> None:
        config = app.config
        self.redis = roundtrip.client(app, url, config.get("CACHE_OPTIONS") or {})
        self.prefix = config.get("CACHE_KEY_PREFIX", "")
        self.state_key = self.prefix + STATE_KEY
        self.timeout = int(config.get("CACHE_DEFAULT_TIMEOUT", 300))
        self.retry_seconds = float(config.get("CATALOG_CACHE_RETRY_SECONDS", 1.0))
        self.lookup_script = self.redis.register_script(LOOKUP)
        self.lookup_sha = _sha(LOOKUP)
        self.bump_script = self.redis.register_script(BUMP)
        self._down_until = 0.0
        self._owed_bump = False

    def lookup(self, key: str) -> tuple[Response | None, State | None]:
        """A current entry's response, or the state to record; (None, None) when Redis cannot be used."""
        if time.monotonic() < self._down_until:
            roundtrip.send()
            return None, None
        if self._owed_bump:
            try:
                self._pay_owed_bump()
            except roundtrip.UNAVAILABLE as exc:
                self._failed("invalidation", exc)
                roundtrip.send()
                return None, None
        answers: list[Any] = []
        name = self.prefix + key
        roundtrip.defer(self.redis, answers.append, "EVALSHA", self.lookup_sha, 2, name, self.state_key)
        roundtrip.send()
        answer = answers[0]
        if isinstance(answer, NoScriptError):  # Redis restarted or its scripts were flushed: load it
            try:
                answer = self.lookup_script(keys=[name, self.state_key])
            except roundtrip.UNAVAILABLE as exc:
                answer = exc
        if isinstance(answer, Exception):
            self._failed("read", answer)
            return None, None
        if answer[0] == 1:
            _, etag, pagination, body = answer[1].split(b"\n", 3)
            return _answer(etag.decode(), pagination.decode(), body), None
        _, epoch, global_, members, seq = answer
        return None, State(epoch.decode(), global_.decode(), members.decode(), int(seq))

    def store(self, key: str, entry: Entry) -> None:
        try:
            self.redis.set(self.prefix + key, entry.encode(), ex=self.timeout)
        except roundtrip.UNAVAILABLE as exc:
            self._failed("write", exc)

    def bump_global(self) -> None:
        self._owed_bump = True
        if time.monotonic() < self._down_until:
            return
        try:
            self._pay_owed_bump()
        except roundtrip.UNAVAILABLE as exc:
            self._failed("invalidation", exc)

    def bump_products(self, ids: Sequence[int], crossed: bool) -> None:
        if time.monotonic() < self._down_until:
            self._owed_bump = True  # paid as a global bump, which covers these products too
            return
        try:
            if self._owed_bump:  # a process that never reads (a worker running the relay) pays here
                self._pay_owed_bump()
            self.bump_script(keys=[self.state_key], args=["1" if crossed else "0", *ids])
        except roundtrip.UNAVAILABLE as exc:
            self._owed_bump = True
            self._failed("invalidation", exc)

    def _pay_owed_bump(self) -> None:
        self.redis.hincrby(self.state_key, "global", 1)
        self._owed_bump = False

    def _failed(self, operation: str, exc: Exception) -> None:
        CACHE_ERRORS.inc()
        self._down_until = time.monotonic() + self.retry_seconds
        logger.warning("catalog cache %s failed, using the database: %s", operation, exc)


class LocalCatalog:
    """The same state in this process (one process only), entries in Flask-Caching's in-process store."""

    def __init__(self, app: Flask) -> None:
        self.timeout = int(app.config.get("CACHE_DEFAULT_TIMEOUT", 300))
        self.epoch = str(time.time_ns())
        self.global_ = 0
        self.members = 0
        self.seq = 0
        self.products: dict[int, int] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> tuple[Response | None, State | None]:
        roundtrip.send()
        with self._lock:
            state = State(self.epoch, str(self.global_), str(self.members), self.seq)
        entry = cache.get(key)
        if (
            isinstance(entry, Entry)
            and entry.epoch == state.epoch
            and entry.global_ == state.global_
            and entry.members in (None, state.members)
            and all(self.products.get(product_id, 0) <= entry.seq for product_id in entry.ids)
        ):
            return _answer(entry.etag, entry.pagination, entry.body), None
        return None, state

    def store(self, key: str, entry: Entry) -> None:
        cache.set(key, entry, timeout=self.timeout)

    def bump_global(self) -> None:
        with self._lock:
            self.global_ += 1

    def bump_products(self, ids: Sequence[int], crossed: bool) -> None:
        with self._lock:
            self.seq += 1
            for product_id in ids:
                self.products[product_id] = self.seq
            if crossed:
                self.members += 1


class Off:
    """The cache switched off (CATALOG_CACHE=false, or several processes without Redis)."""

    def lookup(self, key: str) -> tuple[Response | None, State | None]:
        roundtrip.send()
        return None, None

    def store(self, key: str, entry: Entry) -> None:
        return None

    def bump_global(self) -> None:
        return None

    def bump_products(self, ids: Sequence[int], crossed: bool) -> None:
        return None


Catalog = RedisCatalog | LocalCatalog | Off


def _make_catalog(app: Flask) -> Catalog:
    config = app.config
    if not config.get("CATALOG_CACHE", True):
        return Off()
    url = config.get("CACHE_REDIS_URL") if config.get("CACHE_TYPE") == "RedisCache" else None
    if url:
        return RedisCatalog(app, url)
    if _several_processes():
        logger.warning("catalog cache off: several worker processes need REDIS_URL to share one cache")
        return Off()
    return LocalCatalog(app)


def _several_processes() -> bool:
    """Served by gunicorn, whose workers are separate processes that cannot share a local cache."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn")


def catalog() -> Catalog:
    """This app's catalog cache, made on first use."""
    extensions = current_app.extensions
    found = extensions.get("catalog_cache")
    if found is None:
        found = extensions.setdefault("catalog_cache", _make_catalog(current_app))
    return found


# Public: what writers call after they commit.


def catalog_changed() -> None:
    """A staff write to the catalog (products, categories) committed: every cached response is stale."""
    catalog().bump_global()


def stock_changed(changes: Mapping[int, tuple[int, int]]) -> None:
    """Stocks committed: `{product_id: (stock_before, stock_after)}`; pages showing none of them stay cached."""
    if not changes:
        return
    crossed = any((before > 0) != (after > 0) for before, after in changes.values())
    catalog().bump_products(sorted(changes), crossed)


def products_touched(ids: Iterable[int]) -> None:
    """Bump these products again, not knowing how their stock moved (the outbox relay, after a possible crash)."""
    ids = sorted(set(ids))
    if ids:
        catalog().bump_products(ids, crossed=True)


# The views' decorator.


def _key(namespace: str, path_args: dict[str, Any], params: Sequence[str]) -> str:
    key = "catalog:" + ":".join([namespace, *(str(value) for value in path_args.values())])
    args = request.args
    if params and args:
        key += "?" + urlencode([(name, value) for name in params for value in args.getlist(name)])
    if len(key) > MAX_KEY_LENGTH:
        key = f"catalog:{namespace}#{hashlib.blake2b(key.encode(), digest_size=20).hexdigest()}"
    return key


def _product_ids(body: bytes) -> list[int]:
    shown = orjson.loads(body)
    return [item["id"] for item in shown] if isinstance(shown, list) else [shown["id"]]


def cached_response(
    kind: str, params: Sequence[str] = (), *, shows_products: bool = False, membership_param: str | None = None
) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
    """Serve a catalog GET from the cache, or run the view and store its 200; ETag and 304 either way.

    Apply it outermost (above flask-smorest's decorators), so a hit skips argument parsing too.
    `kind` is one of NAMESPACES; `params` are the query parameters that select the response (any
    other is not part of the key); `shows_products`: the body is products (a list or one), whose
    stock changes the entry must notice; `membership_param`: a query parameter that filters by
    being in stock, so that pages using it depend on `members` too.
    """
    namespace = NAMESPACES[kind]
    hit = CACHE_REQUESTS.labels(kind=kind, result="hit")
    miss = CACHE_REQUESTS.labels(kind=kind, result="miss")

    def decorator(view: Callable[P, Any]) -> Callable[P, Any]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            store = catalog()
            key = _key(namespace, kwargs, params)
            cached, state = store.lookup(key)
            if cached is not None:
                hit.inc()
                return cached
            if not isinstance(store, Off):
                miss.inc()
            response = view(*args, **kwargs)
            if response.status_code != 200:
                return response
            body = response.get_data()
            pagination = response.headers.get("X-Pagination", "")
            etag = etag_of(pagination, body)
            if state is not None:
                ids = _product_ids(body) if shows_products else ()
                depends = membership_param is not None and membership_param in request.args
                store.store(key, Entry(state, depends, ids, etag, pagination, body))
            if _not_modified(etag):
                return current_app.response_class(status=304, headers={"ETag": etag})
            response.headers["ETag"] = etag
            return response

        roundtrip.joins_round_trip(wrapper)
        # Document ETag, If-None-Match and 304 the way flask-smorest's own `etag` decorator does.
        wrapper._apidoc = deepcopy(getattr(view, "_apidoc", {}))  # type: ignore[attr-defined]
        wrapper._apidoc["etag"] = True  # type: ignore[attr-defined]
        return wrapper

    return decorator
