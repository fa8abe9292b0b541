"""Rate limits: one counter per client across the API in a lean hook of the shop's own; flask-limiter for credentials.

What is limited (docs/api.md):
- every request but the operations routes counts against one budget per client, shared by every
  route: `RATELIMIT_USER` per user for a valid access token, `RATELIMIT_ANON` per client IP
  otherwise (`X-Forwarded-For` trusted through `TRUSTED_PROXIES` hops only);
- instead of it, `RATELIMIT_AUTH` per client IP (or per user, where the view says so) on the views
  that check a password (`credential_limit`: token, registration, password change). Brute force
  is slow; these requests are few, and cost a password hash each.

The API budget (`RateLimits`): a `before_request` check computing the client's key and limit, and
a fixed window kept by one Lua script (`INCR_WITH_TTL`: INCRBY the window's counter, set its expiry
when new, answer `{count, pttl}`) deferred into the request's Redis round trip
(`shop.infra.roundtrip`), so a cached catalog page sends the increment and the page lookup
together, without either knowing the other. The answer decides: over the limit, a `429` in the
common error body with `Retry-After`; every answer carries `X-RateLimit-Limit`, `-Remaining` and
`-Reset`, and no other answer `Retry-After` (it means "wait", on a 429 or a 503 only). The
counters' keys are flask-limiter's (`LIMITS:LIMITER/<key>/api/<amount>/<n>/<unit>`), so both
agree on a key's meaning. Redis down (or a timeout): the check is served by in-process counters
(`limits`' MemoryStorage, per process, still limiting), counted in
`shop_rate_limit_fallbacks_total` and logged, and Redis is tried again after
`RATELIMIT_RETRY_SECONDS` (1 s), so an outage costs at most one socket timeout per process a second.
Without Redis (`memory://`) the same in-process counters are the store.

flask-limiter is kept for `RATELIMIT_AUTH`, through its decorators, with `OneCallFixedWindow` as
its strategy: its stock fixed window would send GET and TTL after the increment to write the
headers; this one learns both from the increment's script (the same `INCR_WITH_TTL`) and counts its
in-memory fallback checks too. Both are public names of `limits` (a strategy subclass overriding
`hit` and `get_window_stats`, registered in `limits.strategies.STRATEGIES`). flask-limiter checks a
decorated view inside its decorator, so the `before_request` hook its `init_app` adds (which would
resolve no limit on every other request) is taken out of `app.before_request_funcs` again, and its
header writer and context release (`after_request`, `teardown_request`) run on credential views
only; its hooks are found by the object they are bound to (all public attributes of Flask's app
and of `functools.partial`). A request filter answers "exempt" for every view without a
credential limit, should its check run anyway. Together about 100 Python calls (~35 µs) less on
every other request.

Why not flask-limiter for the API budget: resolving the limits that apply (exemption scopes,
blueprint and default limits, a callable limit string parsed again each time), its bookkeeping and
headers cost about 0.55 ms of worker CPU on a cached page, three times what that page costs
(docs/performance.md); the check here is a key, a dictionary look-up and a deferred command.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial, wraps
from hashlib import sha1
from typing import Any

from apispec import BasePlugin
from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_smorest import abort
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import STRATEGIES, FixedWindowRateLimiter
from limits.util import WindowStats
from redis.exceptions import NoScriptError
from werkzeug.exceptions import HTTPException

from shop.core.metrics import RATE_LIMIT_FALLBACKS
from shop.infra import roundtrip
from shop.infra.api import HEADERS, RATE_LIMIT_HEADERS
from shop.infra.jwt import bearer_claims

logger = logging.getLogger(__name__)

# The answers that tell a client to wait, the only ones with a Retry-After.
RETRY_STATUSES = frozenset({429, 503})
TOO_MANY = "Too many requests: wait the number of seconds in Retry-After, then try again."
# Blueprints whose routes no limit applies to: probes and scrapes must never be refused.
EXEMPT_BLUEPRINTS = frozenset({"health"})
STRATEGY = "shop-fixed-window"
SCOPE = "api"
# The attribute `credential_limit` puts on a view: the methods its own limit covers (None: all).
OWN_LIMIT = "own_rate_limit_methods"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

# INCRBY and the window's remaining time in one call; a key left without expiry gets one.
INCR_WITH_TTL = """
local current = redis.call("incrby", KEYS[1], ARGV[2])
local ttl = redis.call("pttl", KEYS[1])
if ttl < 0 then
    redis.call("expire", KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1]) * 1000
end
return {current, ttl}
"""
INCR_WITH_TTL_SHA = sha1(INCR_WITH_TTL.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

# What the checks of one request learnt, kept on that request only (a Flask `g` can outlive it).
_MEMO = "shop.ratelimit"
_WINDOW = "shop.ratelimit.window"
_CREDENTIAL_VIEW = "shop.ratelimit.credential_view"


def _memo() -> dict[str, Any]:
    return request.environ.setdefault(_MEMO, {})


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def client_ip() -> str:
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


def client_bucket() -> str:
    """The client's address as limits count it: an IPv6 client by its /64, which one subscriber holds
    and rotates addresses within; an IPv4 client by its address."""
    address = client_ip()
    if ":" in address:
        with suppress(ValueError):
            return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return address


def bearer_subject() -> str | None:
    """The user id in a valid access token (signature and expiry checked), or None; the view still checks it fully."""
    claims = bearer_claims()
    if claims and claims.get("type") == "access":
        return str(claims["sub"])
    return None


def rate_limit_key() -> str:
    subject = bearer_subject()
    return f"user:{subject}" if subject else f"ip:{client_bucket()}"


def client_ip_key() -> str:
    return f"ip:{client_bucket()}"


def body_key(field: str, normalize: Callable[[str], str] = str.casefold) -> Callable[[], str]:
    """A limit key from a field of the JSON body (the account a sign-in names, the email a sign-up gives),
    so guesses against one account are limited wherever they come from."""

    def key() -> str:
        body = request.get_json(silent=True)
        value = body.get(field) if isinstance(body, dict) else None
        return f"{field}:{normalize(value)[:320]}" if isinstance(value, str) else f"{field}:-"

    return key


def auth_limit() -> str:
    return current_app.config["RATELIMIT_AUTH"]


def account_limit() -> str:
    return current_app.config["RATELIMIT_ACCOUNT"]


def _has_own_limit(view: Any, method: str) -> bool:
    if view is None or not hasattr(view, OWN_LIMIT):
        return False
    methods = getattr(view, OWN_LIMIT)
    return methods is None or method in methods


def _not_a_credential_view() -> bool:
    """flask-limiter's request filter: only views with a credential limit are its business."""
    endpoint = request.endpoint
    return endpoint is None or not _has_own_limit(current_app.view_functions.get(endpoint), request.method)


# flask-limiter, for RATELIMIT_AUTH on the credential views only (no default limits).
limiter = Limiter(key_func=client_ip_key, strategy=STRATEGY)
limiter.request_filter(_not_a_credential_view)


def credential_limit(
    key_func: Callable[[], str] = client_ip_key,
    methods: list[str] | None = None,
    amount: Callable[[], str] = auth_limit,
    **kwargs: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """RATELIMIT_AUTH on a view that checks a password (per client IP unless told), instead of the API budget."""
    limit = limiter.limit(amount, key_func=key_func, methods=methods, error_message=TOO_MANY, **kwargs)

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        limited = limit(view)
        setattr(limited, OWN_LIMIT, frozenset(method.upper() for method in methods) if methods else None)
        return limited

    return decorator


class OneCallFixedWindow(FixedWindowRateLimiter):
    """flask-limiter's fixed window in one Redis call a check (the headers' figures come from it), fallbacks counted."""

    def __init__(self, storage: Any) -> None:
        super().__init__(storage)
        self.script = None
        if isinstance(storage, RedisStorage):
            self.script = storage.get_connection().register_script(INCR_WITH_TTL)

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        key = item.key_for(*identifiers)
        if self.script is not None:
            count, ttl_ms = self.script([self.storage.prefixed_key(key)], [item.get_expiry(), cost])
            reset = time.time() + int(ttl_ms) / 1000
        else:
            count = self.storage.incr(key, item.get_expiry(), amount=cost)
            reset = self.storage.get_expiry(key)
            if not current_app.config["RATELIMIT_STORAGE_URI"].startswith("memory://"):
                RATE_LIMIT_FALLBACKS.inc()  # the configured Redis is down: flask-limiter fell back
        _memo()[f"window:{id(self)}:{key}"] = WindowStats(reset, max(0, item.amount - int(count)))
        return int(count) <= item.amount

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        remembered = _memo().get(f"window:{id(self)}:{item.key_for(*identifiers)}")
        return remembered or super().get_window_stats(item, *identifiers)


STRATEGIES[STRATEGY] = OneCallFixedWindow


class RateLimits:
    """The API budget of one app: its limits, where its counters live, and its two hooks."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.anonymous = parse(config["RATELIMIT_ANON"])
        self.user = parse(config["RATELIMIT_USER"])
        self.retry_seconds = float(config.get("RATELIMIT_RETRY_SECONDS", 1.0))
        uri: str = config["RATELIMIT_STORAGE_URI"]
        self.redis = None
        if uri.startswith(REDIS_SCHEMES):
            self.redis = roundtrip.client(app, uri, config.get("RATELIMIT_STORAGE_OPTIONS") or {})
            self.script = self.redis.register_script(INCR_WITH_TTL)
        self.local = MemoryStorage()  # the counters without Redis, or while it is down
        # Each limit's counter name with a slot for the client's key (flask-limiter's naming).
        self.names = {item: "LIMITS:" + item.key_for("{}", SCOPE) for item in (self.anonymous, self.user)}
        self.down_until = 0.0
        self.views = app.view_functions

    def check(self) -> None:
        """Count this request against its client's budget (deferred into the round trip when Redis holds it)."""
        endpoint = request.endpoint
        if endpoint is None or request.blueprint in EXEMPT_BLUEPRINTS:
            return
        if _has_own_limit(self.views.get(endpoint), request.method):
            request.environ[_CREDENTIAL_VIEW] = True  # flask-limiter's decorator checks it
            return
        subject = bearer_subject()
        item = self.user if subject else self.anonymous
        key = f"user:{subject}" if subject else f"ip:{client_bucket()}"
        if self.redis is None:
            return self._count_locally(item, key, fallback=False)
        if time.monotonic() < self.down_until:
            return self._count_locally(item, key, fallback=True)
        name = self.names[item].format(key)

        def counted(answer: Any) -> None:
            if isinstance(answer, NoScriptError):  # Redis restarted or its scripts were flushed
                try:
                    answer = self.script([name], [item.get_expiry(), 1])
                except roundtrip.UNAVAILABLE as exc:
                    answer = exc
            if isinstance(answer, Exception):
                self.down_until = time.monotonic() + self.retry_seconds
                logger.warning("rate limit storage unavailable, counting in this process: %s", answer)
                return self._count_locally(item, key, fallback=True)
            count, ttl_ms = answer
            self._decide(item, int(count), time.time() + int(ttl_ms) / 1000)

        roundtrip.defer(self.redis, counted, "EVALSHA", INCR_WITH_TTL_SHA, 1, name, item.get_expiry(), 1)

    def _count_locally(self, item: RateLimitItem, key: str, fallback: bool) -> None:
        if fallback:
            RATE_LIMIT_FALLBACKS.inc()
        name = item.key_for(key, SCOPE)
        count = self.local.incr(name, item.get_expiry())
        self._decide(item, count, self.local.get_expiry(name))

    def _decide(self, item: RateLimitItem, count: int, reset: float) -> None:
        request.environ[_WINDOW] = (item.amount, max(0, item.amount - count), reset)
        if count > item.amount:
            abort(429, message=TOO_MANY, headers={"Retry-After": str(max(1, math.ceil(reset - time.time())))})

    def add_headers(self, response: Response) -> Response:
        """X-RateLimit-Limit, -Remaining and -Reset on every answer the budget counted (a 429 has its Retry-After)."""
        window = request.environ.get(_WINDOW)
        if window is None:
            if not roundtrip.pending():
                return response
            with suppress(HTTPException):  # an error answered before any view ran: count the request now
                roundtrip.send()
            window = request.environ.get(_WINDOW)
            if window is None:
                return response
        headers = response.headers
        # Added, not set: nothing else writes these on a view the budget counts (a set would scan the list).
        headers.add("X-RateLimit-Limit", str(window[0]))
        headers.add("X-RateLimit-Remaining", str(window[1]))
        headers.add("X-RateLimit-Reset", str(math.ceil(window[2])))
        return response


def _bound_to_limiter(hook: Any) -> bool:
    """A hook flask-limiter's init_app registered: a method of the limiter, or a partial taking it first."""
    if getattr(hook, "__self__", None) is limiter:
        return True
    return isinstance(hook, partial) and hook.args[:1] == (limiter,)


def _on_credential_views(hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @wraps(hook)
    def only_there(value: Any) -> Any:
        return hook(value) if request.environ.get(_CREDENTIAL_VIEW) else value

    return only_there


def _retry_after_only_when_refused(hook: Callable[[Response], Response]) -> Callable[[Response], Response]:
    """flask-limiter's header writer, without the Retry-After it puts on every answer: only a 429 or 503 keeps it."""

    @wraps(hook)
    def writer(response: Response) -> Response:
        response = hook(response)
        if response.status_code not in RETRY_STATUSES:
            response.headers.pop("Retry-After", None)
        return response

    return writer


def init_rate_limits(app: Flask) -> None:
    """The API budget's hooks (none when RATELIMIT_ENABLED is off), and flask-limiter for the credential views."""
    limiter.init_app(app)
    # flask-limiter checks a decorated view inside its decorator; the before_request hook init_app
    # adds would resolve no limit for every other request (about 35 µs each): it is taken out again.
    hooks = app.before_request_funcs.get(None, [])
    hooks[:] = [hook for hook in hooks if getattr(hook, "__self__", None) is not limiter]
    # Its header writer and context release only matter where it checked a limit: on credential views.
    hooks = app.after_request_funcs.get(None, [])
    hooks[:] = [
        _on_credential_views(_retry_after_only_when_refused(hook)) if _bound_to_limiter(hook) else hook
        for hook in hooks
    ]
    hooks = app.teardown_request_funcs.get(None, [])
    hooks[:] = [_on_credential_views(hook) if _bound_to_limiter(hook) else hook for hook in hooks]
    if not app.config["RATELIMIT_ENABLED"]:
        return
    limits = app.extensions["shop.ratelimits"] = RateLimits(app)
    app.before_request(limits.check)
    app.after_request(limits.add_headers)


class RateLimitedResponses(BasePlugin):
    """Document the 429 and the X-RateLimit-* headers on every operation a limit applies to (not the operations routes).

    The error responses are shared components that carry these headers already (shop.infra.api).
    """

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        rule = kwargs.get("rule")
        if rule is not None and rule.endpoint.split(".", 1)[0] in EXEMPT_BLUEPRINTS:
            return
        for operation in (operations or {}).values():
            responses = operation.setdefault("responses", {})
            for response in responses.values():
                if isinstance(response, dict):  # an answer of this operation's own, not a shared error
                    headers = response.setdefault("headers", {})
                    for name, component in RATE_LIMIT_HEADERS.items():
                        headers.setdefault(name, {"$ref": HEADERS + component})
            responses.setdefault("429", "TOO_MANY_REQUESTS")
