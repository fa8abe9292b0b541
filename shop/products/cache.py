"""The catalog's response cache: pages kept without their stock, the stock laid over them on the way out.

What is kept: a successful (200) catalog GET, with its ETag, X-Pagination and Link, under a key made of
the path and the query parameters that select the page (hashed when long). The lookup runs before
the request's arguments are parsed and before any SQL or serialization; only 200s are stored, so
a malformed query never reaches the store. `If-None-Match` with the current ETag answers 304, on
a hit or a miss.

The volatile field is kept apart. A page of products (a list, or one product) is stored as a
template: its bytes with a placeholder where each product's stock goes (the page is built with a
sentinel stock, `shown_stock`, and its JSON split on `"stock":<sentinel>`), and the ids of the
products it shows, in order. The stocks live in one Redis hash, `catalog:stock`: field = product
id, value = `<stock_version>:<stock>`. `products.stock_version` is incremented by every statement
that changes a stock (orders, cancels, staff adjustments, PATCH/PUT of `stock`), under the row
lock, so it grows in commit order; `SET_STOCK` writes a product's value only when its version is
greater than the stored one (or none is stored), so a late writer, or a reader that read version
5, never overwrites version 6. An order therefore makes no cached page miss: its stock is read
from the hash by the same lookup that reads the page.

Freshness of the rest: one Redis hash, `catalog:state`, says what changed since an entry was built:
- `epoch`: set once, from Redis' clock, when the hash is missing (a Redis restart, an eviction,
  someone deleting it): an entry built before carries another epoch and never matches again;
- `global`: bumped by every staff write to the catalog (products, categories): every entry stops
  matching (`catalog_changed`);
- `members`: bumped when a product's stock crosses zero (in stock ⇄ sold out), which changes the
  set a page filtered by `in_stock` shows and counts: only those pages depend on it.

An entry records the `epoch` and `global` (and `members`, only for a page filtered by `in_stock`)
read before its database read. The lookup is one Lua script (`LOOKUP`, sent with EVALSHA in the
request's round trip, `shop.infra.roundtrip`, beside the rate limit's increment): it reads the
entry and the state and answers `{1, entry, stocks}` (HMGET of `catalog:stock` for the entry's
ids) when epoch, global (and members) are equal; else `{0, epoch, global, members}`, the state
the miss path stores its entry under. On the way out the stocks are put into the template and
the ETag is a hash of the stored ETag and those stocks: a stock change changes the ETag, and an
`If-None-Match` with the old one gets the new page. The miss path (the page read from the
database, each row with its stock and stock_version) stores its entry and `SET_STOCK`s its rows
in one script call.

Writers, after their commit: `stock_changed([(id, stock, stock_version, crossed), ...])` (orders,
cancels, staff adjustments and stock edits) runs `SET_STOCK`, which also bumps `members` when a
product crossed zero (the caller says so), or when the stored stock and the new one are on
different sides of zero. Staff writes also bump `global`. Why a write is seen by the next read:
the write commits, then sets its stock (or bumps), then answers; a reader that raced it and read
the database before the commit stores its page under the state it read before (older than a
`global`/`members` bump that followed), and its older stock version is refused by `SET_STOCK`.

Failure cases:
- Redis unavailable (refused, timeout, frozen): reads go to the database (counted in
  `shop_cache_errors_total`, logged) and Redis is left alone for `CATALOG_CACHE_RETRY_SECONDS`
  (1 s), so an outage costs at most one 0.25 s socket timeout per process a second. A bump or a
  stock that could not reach Redis is owed, and paid before this process reads from Redis again
  (or on its next write): a `global` bump, and the owed products' stocks read again from the
  database (more than `MAX_OWED_STOCKS` of them: `catalog:stock` is deleted, refilled by readers).
- `catalog:stock` evicted, deleted, or Redis restarted empty: a hit whose stocks are missing
  reads (id, stock, stock_version) of just those products from the database in one statement,
  `SET_STOCK`s them and serves; the first reads after a loss cost that statement, nothing is stale.
- `catalog:state` evicted or deleted while entries survive: the next lookup sets a new epoch, so
  no surviving entry matches. (Redis restarted from a snapshot holding old state, stocks and
  entries: what happened since the snapshot is lost, and those can be stale until a product's
  next stock write, or the entry's TTL, `CACHE_TIMEOUT`. Run the cache's Redis without
  persistence, or delete `catalog:state` and `catalog:stock` after restoring one.) Likewise a
  database restored or rebuilt under a Redis that kept `catalog:stock`: its versions went back, so
  the stored (newer-looking) stocks win until `catalog:stock` is deleted; delete it then.
- A crash between a commit and its `SET_STOCK`: the hash keeps the older stock, and cached pages
  show it, until the next write of that product's stock or, for an order, until the outbox relay
  publishes the order's email (`products_touched`, which reads those products' stock and version
  from the database and sets them: every `OUTBOX_RELAY_SECONDS`). A staff adjustment has no outbox
  row: its stock is stale until the product's next stock write, or until `catalog:stock` is lost.
  A lost `members` bump leaves pages filtered by `in_stock` showing the old set for as long.
- Two instances (or workers) on one Redis share the state and stocks and see each other's writes
  at once; their writes of one product are ordered by `stock_version`, whichever reaches Redis
  first. One that cannot reach Redis while the others can still serves from the database, and its
  owed writes reach the others when it reaches Redis again.
- Entries evicted: a miss. Entry bytes that do not parse (another writer), or whose placeholders
  do not match their ids: a miss, overwritten.

Without Redis (no `REDIS_URL`): the same state and stocks in this process, checked the same way in
Python, entries in Flask-Caching's in-process store (clearing that store forgets the stocks too).
Exact for a single process (`make run` serves with `flask run`), wrong for several: under
gunicorn the cache is off unless `REDIS_URL` is set.

Counted in `shop_cache_requests_total{kind="list|detail|categories|category", result="hit|miss"}`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from functools import wraps
from typing import Any, NamedTuple, ParamSpec
from urllib.parse import urlencode

from flask import Flask, Response, current_app, g, has_app_context, request
from redis.exceptions import NoScriptError
from sqlalchemy import bindparam, select

from shop.core.metrics import CACHE_ERRORS, CACHE_REQUESTS
from shop.extensions import cache, db
from shop.infra import roundtrip
from shop.products.models import Product

logger = logging.getLogger(__name__)

P = ParamSpec("P")
STATE_KEY = "catalog:state"
STOCK_KEY = "catalog:stock"
# Where each kind of page is kept: `catalog:<namespace>[:<path args>][?<selecting parameters>]`.
NAMESPACES = {"list": "products", "detail": "product", "categories": "categories", "category": "category"}
# A key longer than this is hashed: search texts may be long, Redis keys should not be.
MAX_KEY_LENGTH = 200
# The stock a page is built with when it is to be stored: no product has it (stock >= 0). In the
# page's JSON, `"stock":` only ever appears as a key (a quote inside a string is escaped).
SENTINEL_STOCK = -987654321
STOCK_KEY_BYTES = b'"stock":'
PLACEHOLDER = STOCK_KEY_BYTES + str(SENTINEL_STOCK).encode()
# In-process: the epoch is also kept in Flask-Caching's store; when it is gone (the store cleared),
# the stocks are forgotten too, as Redis losing both hashes.
LOCAL_EPOCH_KEY = "catalog:local-epoch"
# Past this many products owed while Redis was away, the whole stock hash is dropped instead.
MAX_OWED_STOCKS = 10_000

# A product's stock as `stock_changed` and the miss path give it: (id, stock, stock_version, crossed zero).
StockRow = tuple[int, int, int, bool]

# KEYS[1] the entry, KEYS[2] the state hash, KEYS[3] the stock hash. An entry is
# "<epoch> <global> <members|-> <ids>\n" followed by the ETag, X-Pagination, Link and template lines.
# Answers {1, entry, stocks} when it is current (stocks: "<stock>,<stock>,..." of its ids, in order,
# empty where the hash has none; one bulk string, cheaper to read than an array), else
# {0, epoch, global, members}: the state a miss records before its database read.
LOOKUP = """
local raw = redis.call("GET", KEYS[1])
local epoch, global, members, ids
if raw then
    local newline = string.find(raw, "\\n", 1, true)
    if newline then
        epoch, global, members, ids = string.match(
            string.sub(raw, 1, newline - 1), "^(%d+) (%d+) ([%d-]+) ([%d,]*)$")
    end
end
local state = redis.call("HMGET", KEYS[2], "epoch", "global", "members")
local current = state[1]
if not current then
    local now = redis.call("TIME")
    redis.call("HSETNX", KEYS[2], "epoch", now[1] .. string.format("%06d", tonumber(now[2])))
    current = redis.call("HGET", KEYS[2], "epoch")
elseif epoch == current and (state[2] or "0") == global and (members == "-" or (state[3] or "0") == members) then
    local fields = {}
    for id in string.gmatch(ids, "%d+") do fields[#fields + 1] = id end
    if #fields == 0 then return {1, raw, ""} end
    local values = redis.call("HMGET", KEYS[3], unpack(fields))
    for i = 1, #values do
        values[i] = values[i] and string.match(values[i], ":(%d+)$") or ""
    end
    return {1, raw, table.concat(values, ",")}
end
return {0, current, state[2] or "0", state[3] or "0"}
"""

# KEYS[1] the stock hash, KEYS[2] the state hash, KEYS[3] (optional) an entry to store.
# ARGV[1] the entry's bytes, ARGV[2] its TTL (both ignored without KEYS[3]), then four per product:
# id, stock_version, stock, "1" when the caller knows the stock crossed zero. A product's value is
# written only when its version is newer than the stored one, or none is stored; `members` is bumped
# when a caller says a stock crossed zero, or a write moves a stored stock across zero.
# Answers how many products were written.
SET_STOCK = """
local bump = false
local written = 0
for i = 3, #ARGV, 4 do
    local version, stock = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if ARGV[i + 3] == "1" then bump = true end
    local stored = redis.call("HGET", KEYS[1], ARGV[i])
    local stored_version, stored_stock
    if stored then
        local colon = string.find(stored, ":", 1, true)
        if colon then
            stored_version = tonumber(string.sub(stored, 1, colon - 1))
            stored_stock = tonumber(string.sub(stored, colon + 1))
        end
    end
    if not stored_version or not stored_stock or version > stored_version then
        redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1] .. ":" .. ARGV[i + 2])
        written = written + 1
        if stored_stock and (stored_stock > 0) ~= (stock > 0) then bump = true end
    end
end
if bump then redis.call("HINCRBY", KEYS[2], "members", 1) end
if KEYS[3] then redis.call("SET", KEYS[3], ARGV[1], "EX", ARGV[2]) end
return written
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


class State(NamedTuple):
    """The catalog state a lookup read, which the entry built after it records."""

    epoch: str
    global_: str
    members: str


class Entry:
    """A 200 catalog response as stored: its template (stocks left out), the state it was built under, its ids."""

    __slots__ = ("epoch", "etag", "global_", "ids", "link", "members", "pagination", "template")

    def __init__(
        self,
        state: State,
        depends_on_members: bool,
        ids: Sequence[int],
        etag: str,
        pagination: str,
        link: str,
        template: bytes,
    ) -> None:
        self.epoch = state.epoch
        self.global_ = state.global_
        self.members = state.members if depends_on_members else None
        self.ids = tuple(ids)
        self.etag = etag
        self.pagination = pagination
        self.link = link  # the key's parameters and the page figures decide it (shop.infra.api.Blueprint)
        self.template = template

    def encode(self) -> bytes:
        ids = ",".join(map(str, self.ids))
        header = (
            f"{self.epoch} {self.global_} {self.members or '-'} {ids}\n{self.etag}\n{self.pagination}\n{self.link}\n"
        )
        return header.encode() + self.template


def etag_of(pagination: str, body: bytes) -> str:
    return '"' + hashlib.blake2b(pagination.encode() + b"\n" + body, digest_size=16).hexdigest() + '"'


def etag_with_stocks(etag: str, stocks: Sequence[bytes]) -> str:
    """The ETag of a page: its template's, combined with the stocks laid over it (none: the template's own)."""
    if not stocks:
        return etag
    return '"' + hashlib.blake2b(etag.encode() + b"\n" + b",".join(stocks), digest_size=16).hexdigest() + '"'


def fill_in(template: bytes, stocks: Sequence[bytes]) -> bytes | None:
    """The template with each placeholder replaced by its stock, in order; None when they do not pair up."""
    if not stocks:
        return template if PLACEHOLDER not in template else None
    parts = template.split(PLACEHOLDER)
    if len(parts) != len(stocks) + 1:
        return None
    out = [parts[0]]
    for stock, part in zip(stocks, parts[1:], strict=True):
        out += (STOCK_KEY_BYTES, stock, part)
    return b"".join(out)


def _not_modified(etag: str) -> bool:
    return "HTTP_IF_NONE_MATCH" in request.environ and request.if_none_match.contains_weak(etag.strip('"'))


def _answer(etag: str, pagination: str, link: str, body: bytes) -> Response:
    if _not_modified(etag):
        return current_app.response_class(status=304, headers={"ETag": etag})
    headers = [("ETag", etag), ("X-Pagination", pagination)] if pagination else [("ETag", etag)]
    if link:
        headers.append(("Link", link))
    return current_app.response_class(body, headers=headers, mimetype="application/json")


def _serve(etag: str, pagination: str, link: str, template: bytes, stocks: Sequence[bytes]) -> Response | None:
    body = fill_in(template, stocks)
    if body is None:
        return None
    return _answer(etag_with_stocks(etag, stocks), pagination, link, body)


# (id, stock, stock_version) of some products, in one statement: stocks missing from the cache.
STOCKS_OF = select(Product.id, Product.stock, Product.stock_version).where(
    Product.id.in_(bindparam("ids", expanding=True))
)


def stocks_from_database(ids: Iterable[int]) -> list[StockRow]:
    """The current stock and version of these products (unknown ids left out), crossing nothing."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    rows = db.session.connection().execute(STOCKS_OF, {"ids": wanted})
    return [(row.id, row.stock, row.stock_version, False) for row in rows]


def _stock_args(rows: Iterable[StockRow]) -> list[Any]:
    args: list[Any] = []
    for product_id, stock, version, crossed in rows:
        args += (product_id, version, stock, "1" if crossed else "0")
    return args


class RedisCatalog:
    """The state, stocks and entries in Redis, shared by every process; whether Redis may be used now."""

    def __init__(self, app: Flask, url: str) -> None:
        config = app.config
        self.redis = roundtrip.client(app, url, config.get("CACHE_OPTIONS") or {})
        self.prefix = config.get("CACHE_KEY_PREFIX", "")
        self.state_key = self.prefix + STATE_KEY
        self.stock_key = self.prefix + STOCK_KEY
        self.timeout = int(config.get("CACHE_DEFAULT_TIMEOUT", 300))
        self.retry_seconds = float(config.get("CATALOG_CACHE_RETRY_SECONDS", 1.0))
        self.lookup_script = self.redis.register_script(LOOKUP)
        self.lookup_sha = _sha(LOOKUP)
        self.set_stock_script = self.redis.register_script(SET_STOCK)
        self._down_until = 0.0
        self._owed_bump = False
        self._owed_stocks: set[int] = set()
        self._owed_all_stocks = False

    def lookup(self, key: str) -> tuple[Response | None, State | None]:
        """A current entry's response, or the state to record; (None, None) when Redis cannot be used."""
        if time.monotonic() < self._down_until:
            roundtrip.send()
            return None, None
        if self._owes():
            try:
                self._pay_owed()
            except roundtrip.UNAVAILABLE as exc:
                self._failed("invalidation", exc)
                roundtrip.send()
                return None, None
        answers: list[Any] = []
        name = self.prefix + key
        keys = (name, self.state_key, self.stock_key)
        roundtrip.defer(self.redis, answers.append, "EVALSHA", self.lookup_sha, 3, *keys)
        roundtrip.send()
        answer = answers[0]
        if isinstance(answer, NoScriptError):  # Redis restarted or its scripts were flushed: load it
            try:
                answer = self.lookup_script(keys=list(keys))
            except roundtrip.UNAVAILABLE as exc:
                answer = exc
        if isinstance(answer, Exception):
            self._failed("read", answer)
            return None, None
        if answer[0] != 1:
            _, epoch, global_, members = answer
            return None, State(epoch.decode(), global_.decode(), members.decode())
        lines = answer[1].split(b"\n", 4)
        # The header matched the state: its fields are the current state, to overwrite a broken entry under.
        epoch, global_, members, _ = lines[0].decode().split(" ")
        current = State(epoch, global_, "0" if members == "-" else members)
        if len(lines) != 5:
            return None, current
        header, etag, pagination, link, template = lines
        stocks: list[bytes] = answer[2].split(b",") if answer[2] else []
        if b"" in stocks:
            try:
                stocks = self._fill(header, stocks)
            except roundtrip.UNAVAILABLE as exc:
                self._failed("write", exc)
                return None, None
            if b"" in stocks:
                return None, None  # a product gone from the database: build the page, do not store it
        served = _serve(etag.decode(), pagination.decode(), link.decode(), template, stocks)
        return (served, None) if served is not None else (None, current)

    def _fill(self, header: bytes, stocks: list[bytes]) -> list[bytes]:
        """The stocks missing from the hash (evicted, lost, never set: b""), read from the database and set."""
        ids = [int(part) for part in header.rsplit(b" ", 1)[1].split(b",")]
        pairs = list(zip(ids, stocks, strict=True))
        rows = stocks_from_database(product_id for product_id, stock in pairs if not stock)
        self.set_stock_script(keys=[self.stock_key, self.state_key], args=[b"", 0, *_stock_args(rows)])
        found = {product_id: str(stock).encode() for product_id, stock, _, _ in rows}
        return [stock or found.get(product_id, b"") for product_id, stock in pairs]

    def store(self, key: str, entry: Entry, rows: Sequence[StockRow]) -> None:
        keys = [self.stock_key, self.state_key, self.prefix + key]
        try:
            self.set_stock_script(keys=keys, args=[entry.encode(), self.timeout, *_stock_args(rows)])
        except roundtrip.UNAVAILABLE as exc:
            self._failed("write", exc)

    def bump_global(self) -> None:
        self._owed_bump = True
        if time.monotonic() < self._down_until:
            return
        try:
            self._pay_owed()
        except roundtrip.UNAVAILABLE as exc:
            self._failed("invalidation", exc)

    def set_stocks(self, rows: Sequence[StockRow]) -> None:
        if time.monotonic() < self._down_until:
            self._owe_stocks(rows)
            return
        try:
            if self._owes():  # a process that never reads (a worker running the relay) pays here
                self._pay_owed()
            self.set_stock_script(keys=[self.stock_key, self.state_key], args=[b"", 0, *_stock_args(rows)])
        except roundtrip.UNAVAILABLE as exc:
            self._owe_stocks(rows)
            self._failed("invalidation", exc)

    def _owes(self) -> bool:
        return self._owed_bump or self._owed_all_stocks or bool(self._owed_stocks)

    def _owe_stocks(self, rows: Sequence[StockRow]) -> None:
        # The lost write's `members` bump is paid as a `global` bump, which every entry depends on.
        self._owed_bump = True
        self._owed_stocks.update(row[0] for row in rows)
        if len(self._owed_stocks) > MAX_OWED_STOCKS:
            self._owed_all_stocks = True
            self._owed_stocks.clear()

    def _pay_owed(self) -> None:
        """What this process could not tell Redis: the stocks (read again, at their current version), then `global`."""
        if self._owed_all_stocks:
            self.redis.delete(self.stock_key)
            self._owed_all_stocks = False
        if self._owed_stocks:
            owed = sorted(self._owed_stocks)
            rows = stocks_from_database(owed)
            self.set_stock_script(keys=[self.stock_key, self.state_key], args=[b"", 0, *_stock_args(rows)])
            self._owed_stocks.difference_update(owed)
        if self._owed_bump:
            self.redis.hincrby(self.state_key, "global", 1)
            self._owed_bump = False

    def _failed(self, operation: str, exc: Exception) -> None:
        CACHE_ERRORS.inc()
        self._down_until = time.monotonic() + self.retry_seconds
        logger.warning("catalog cache %s failed, using the database: %s", operation, exc)


class LocalCatalog:
    """The same state and stocks in this process (one process only), entries in Flask-Caching's in-process store."""

    def __init__(self, app: Flask) -> None:
        self.timeout = int(app.config.get("CACHE_DEFAULT_TIMEOUT", 300))
        self.epoch = ""
        self.global_ = 0
        self.members = 0
        self.stocks: dict[int, tuple[int, int]] = {}  # product id → (stock_version, stock)
        self._lock = threading.Lock()

    def lookup(self, key: str) -> tuple[Response | None, State | None]:
        roundtrip.send()
        with self._lock:
            if cache.get(LOCAL_EPOCH_KEY) != self.epoch or not self.epoch:
                self._restart()
            state = State(self.epoch, str(self.global_), str(self.members))
        entry = cache.get(key)
        if not (
            isinstance(entry, Entry)
            and entry.epoch == state.epoch
            and entry.global_ == state.global_
            and entry.members in (None, state.members)
        ):
            return None, state
        with self._lock:
            known = [self.stocks.get(product_id) for product_id in entry.ids]
        if None in known:
            self.set_stocks(stocks_from_database(i for i, value in zip(entry.ids, known, strict=True) if value is None))
            with self._lock:
                known = [self.stocks.get(product_id) for product_id in entry.ids]
        if None in known:
            return None, None
        stocks = [str(value[1]).encode() for value in known if value is not None]
        served = _serve(entry.etag, entry.pagination, entry.link, entry.template, stocks)
        return (served, None) if served is not None else (None, state)

    def _restart(self) -> None:
        """The store was cleared (or its marker pruned), as Redis losing `catalog:state` and `catalog:stock`."""
        self.epoch = str(time.time_ns())
        self.stocks.clear()
        cache.set(LOCAL_EPOCH_KEY, self.epoch, timeout=0)

    def store(self, key: str, entry: Entry, rows: Sequence[StockRow]) -> None:
        self.set_stocks(rows)
        cache.set(key, entry, timeout=self.timeout)

    def bump_global(self) -> None:
        with self._lock:
            self.global_ += 1

    def set_stocks(self, rows: Iterable[StockRow]) -> None:
        with self._lock:
            bump = False
            for product_id, stock, version, crossed in rows:
                bump = bump or crossed
                stored = self.stocks.get(product_id)
                if stored is None or version > stored[0]:
                    self.stocks[product_id] = (version, stock)
                    if stored is not None and (stored[1] > 0) != (stock > 0):
                        bump = True
            if bump:
                self.members += 1


class Off:
    """The cache switched off (CATALOG_CACHE=false, or several processes without Redis)."""

    def lookup(self, key: str) -> tuple[Response | None, State | None]:
        roundtrip.send()
        return None, None

    def store(self, key: str, entry: Entry, rows: Sequence[StockRow]) -> None:
        return None

    def bump_global(self) -> None:
        return None

    def set_stocks(self, rows: Sequence[StockRow]) -> None:
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


# Public: what writers call after they commit, and what the page builder calls for each product.


def catalog_changed() -> None:
    """A staff write to the catalog (products, categories) committed: every cached response is stale."""
    catalog().bump_global()


def stock_changed(changes: Iterable[StockRow]) -> None:
    """Stocks committed: `(product_id, stock, stock_version, crossed_zero)` each, as the write's RETURNING said.

    No cached page misses for it, except pages filtered by `in_stock` when a stock crossed zero.
    """
    rows = sorted(changes)
    if rows:
        catalog().set_stocks(rows)


def products_touched(ids: Iterable[int]) -> None:
    """Set these products' stocks again from the database (the outbox relay, after a possible crash)."""
    rows = stocks_from_database(ids)
    if rows:
        catalog().set_stocks(rows)


def shown_stock(product_id: int, stock: int, stock_version: int) -> int:
    """The stock to put in a product's dumped shape: the sentinel, recorded, when the page is being cached."""
    shown = g.get("catalog_stocks") if has_app_context() else None
    if shown is None:
        return stock
    shown.append((product_id, stock, stock_version, False))
    return SENTINEL_STOCK


# The views' decorator.


def _key(namespace: str, path_args: dict[str, Any], params: Sequence[str]) -> str:
    key = "catalog:" + ":".join([namespace, *(str(value) for value in path_args.values())])
    args = request.args
    if params and args:
        key += "?" + urlencode([(name, value) for name in params for value in args.getlist(name)])
    if len(key) > MAX_KEY_LENGTH:
        key = f"catalog:{namespace}#{hashlib.blake2b(key.encode(), digest_size=20).hexdigest()}"
    return key


def cached_response(
    kind: str, params: Sequence[str] = (), *, shows_products: bool = False, membership_param: str | None = None
) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
    """Serve a catalog GET from the cache, or run the view and store its 200; ETag and 304 either way.

    Apply it outermost (above flask-smorest's decorators), so a hit skips argument parsing too.
    `kind` is one of NAMESPACES; `params` are the query parameters that select the response (any
    other is not part of the key); `shows_products`: the body is products (a list or one) built
    with `shown_stock`, whose stocks are kept apart from the stored template; `membership_param`:
    a query parameter that filters by being in stock, so that pages using it depend on `members`.
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
            shown: list[StockRow] = []
            if shows_products:
                g.catalog_stocks = shown  # the page is built as a template (the same on every path: one ETag)
                try:
                    response = view(*args, **kwargs)
                finally:
                    g.pop("catalog_stocks", None)
            else:
                response = view(*args, **kwargs)
            if response.status_code != 200:
                return response
            template = response.get_data()
            pagination = response.headers.get("X-Pagination", "")
            stored_etag = etag_of(pagination, template)
            stocks = [str(row[1]).encode() for row in shown]
            if shows_products:
                body = fill_in(template, stocks)
                if body is None:
                    raise RuntimeError(f"{kind} page: its stock placeholders do not match its products")
                response.set_data(body)
            if state is not None:
                depends = membership_param is not None and membership_param in request.args
                link = response.headers.get("Link", "")
                entry = Entry(state, depends, [row[0] for row in shown], stored_etag, pagination, link, template)
                store.store(key, entry, shown)
            etag = etag_with_stocks(stored_etag, stocks)
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
