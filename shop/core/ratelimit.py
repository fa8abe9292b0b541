"""Who a request counts against, and how much it may do: per user when signed in, else per client IP.

Each request is checked against exactly one limit, so one storage round trip:
- `API_LIMIT`, one counter per client shared by every route: `RATELIMIT_USER` for a valid access
  token's user, `RATELIMIT_ANON` for the client IP otherwise;
- instead of it, `RATELIMIT_AUTH` per client IP on the credential endpoints (`auth_limit`).
Operations routes (health, readiness, metrics) are exempt.

The strategy is a fixed window whose increment also reads the window's expiry in the same Redis
call (`OneTripFixedWindow`); flask-limiter's stock strategy would spend two more round trips per
request (GET and TTL) to write the `X-RateLimit-*` and `Retry-After` headers. Keys the request
will read next from the same Redis (a cached catalog page) travel in that round trip too
(`shop.core.readahead`). When Redis fails,
flask-limiter switches to in-process counters (logged by the `flask-limiter` logger); each check
served that way is counted in `shop_rate_limit_fallbacks_total`.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from apispec import BasePlugin
from flask import current_app, request
from flask_jwt_extended import decode_token
from flask_limiter import Limit
from limits import RateLimitItem
from limits.storage import RedisStorage
from limits.strategies import STRATEGIES, FixedWindowRateLimiter
from limits.util import WindowStats
from redis.exceptions import NoScriptError

from shop.core import readahead

TOO_MANY = "Too many requests: wait the number of seconds in Retry-After, then try again."
# Blueprints whose routes no limit applies to: probes and scrapes must never be refused.
EXEMPT_BLUEPRINTS = frozenset({"health"})
STRATEGY = "shop-fixed-window"

# What the checks of one request learnt, kept on that request only (a Flask `g` can outlive it).
_MEMO = "shop.ratelimit"


def _memo() -> dict[str, Any]:
    return request.environ.setdefault(_MEMO, {})


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _client_ip() -> str:
    """The client's address, trusting `X-Forwarded-For` only through TRUSTED_PROXIES hops.

    Each trusted proxy appends the address it received the request from, so with N of them the
    client is the N-th entry from the right; whatever the client itself put to the left is ignored.
    """
    hops = current_app.config["TRUSTED_PROXIES"]
    if hops:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= hops and _valid_ip(forwarded[-hops]):
            return forwarded[-hops]
    return request.remote_addr or "unknown"


def _bearer_subject() -> str | None:
    """The user id in a well-formed access token, or None; the view still checks the token fully."""
    memo = _memo()
    if "subject" in memo:
        return memo["subject"]
    subject = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        try:
            claims = decode_token(header[7:])
        except Exception:  # noqa: BLE001 - any bad token counts as anonymous here
            claims = None
        if claims and claims.get("type") == "access":
            subject = str(claims["sub"])
    memo["subject"] = subject
    return subject


def rate_limit_key() -> str:
    subject = _bearer_subject()
    return f"user:{subject}" if subject else f"ip:{_client_ip()}"


def client_ip_key() -> str:
    return f"ip:{_client_ip()}"


def default_limit() -> str:
    config = current_app.config
    return config["RATELIMIT_USER"] if _bearer_subject() else config["RATELIMIT_ANON"]


def auth_limit() -> str:
    return current_app.config["RATELIMIT_AUTH"]


def credential_limit(key_func: Any = client_ip_key, **kwargs: Any) -> Any:
    """RATELIMIT_AUTH on a view that checks a password (per client IP unless told): brute force is slow."""
    from shop.extensions import limiter

    return limiter.limit(auth_limit, key_func=key_func, error_message=TOO_MANY, **kwargs)


def is_exempt() -> bool:
    """No limit on operations routes (a flask-limiter request filter)."""
    return request.blueprint in EXEMPT_BLUEPRINTS


# One counter per client across the whole API (shared scope), not one per route.
API_LIMIT = Limit(default_limit, key_function=rate_limit_key, shared=True, scope="api", error_message=TOO_MANY)

# INCRBY and the window's remaining time in one call; a key left without expiry gets one.
_INCR_WITH_TTL = """
local current = redis.call("incrby", KEYS[1], ARGV[2])
local ttl = redis.call("pttl", KEYS[1])
if ttl < 0 then
    redis.call("expire", KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1]) * 1000
end
return {current, ttl}
"""


class OneTripFixedWindow(FixedWindowRateLimiter):
    """A fixed window that learns the window's state from its own increment: one round trip a check.

    `hit` remembers (for this request) the remaining count and reset time, which is all that
    flask-limiter's header writer asks `get_window_stats` for afterwards.
    """

    def __init__(self, storage: Any) -> None:
        super().__init__(storage)
        self._script = None
        if isinstance(storage, RedisStorage):
            self._client = storage.get_connection()
            self._script = self._client.register_script(_INCR_WITH_TTL)
            self._location = readahead.location(self._client)

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        key = item.key_for(*identifiers)
        if self._script is not None:
            count, ttl_ms = self._increment(self.storage.prefixed_key(key), item.get_expiry(), cost)
            reset = time.time() + int(ttl_ms) / 1000
        else:
            count = self.storage.incr(key, item.get_expiry(), amount=cost)
            reset = self.storage.get_expiry(key)
            self._count_fallback()
        _memo()[f"window:{id(self)}:{key}"] = WindowStats(reset, max(0, item.amount - int(count)))
        return int(count) <= item.amount

    def _increment(self, name: str, expiry: int, cost: int) -> tuple[int, int]:
        """The script's (count, ttl), with the request's read-ahead keys fetched in the same round trip."""
        keys = readahead.wanted(self._location)
        if not keys:
            return self._script([name], [expiry, cost])  # type: ignore[misc]
        pipe = self._client.pipeline(transaction=False)
        pipe.evalsha(self._script.sha, 1, name, expiry, cost)  # type: ignore[union-attr]
        pipe.mget(keys)
        try:
            (count, ttl_ms), values = pipe.execute()
        except NoScriptError:  # Redis restarted or its scripts were flushed: load it, and no read-ahead
            return self._script([name], [expiry, cost])  # type: ignore[misc]
        readahead.keep(keys, values)
        return count, ttl_ms

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        remembered = _memo().get(f"window:{id(self)}:{item.key_for(*identifiers)}")
        return remembered or super().get_window_stats(item, *identifiers)

    def _count_fallback(self) -> None:
        """Count a check served in-process while the configured storage (Redis) is down."""
        from shop.core.metrics import RATE_LIMIT_FALLBACKS
        from shop.extensions import limiter

        if self.storage is not limiter.storage:
            RATE_LIMIT_FALLBACKS.inc()


STRATEGIES[STRATEGY] = OneTripFixedWindow


class RateLimitedResponses(BasePlugin):
    """Document the 429 on every operation a limit applies to (all but the operations routes)."""

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        rule = kwargs.get("rule")
        if rule is not None and rule.endpoint.split(".", 1)[0] in EXEMPT_BLUEPRINTS:
            return
        for operation in (operations or {}).values():
            operation.setdefault("responses", {}).setdefault("429", "TOO_MANY_REQUESTS")
