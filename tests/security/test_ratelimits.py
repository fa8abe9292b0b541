"""Rate limits: brute force on credentials, per-user and per-IP budgets, proxies, Redis and its outages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from shop.config import load_config
from shop.extensions import limiter
from shop.infra.ratelimit import OneCallFixedWindow
from tests.conftest import PASSWORD, bearer
from tests.factories import make_user
from tests.security.conftest import RedisServer, assert_error

ALICE = {"username": "alice", "password": PASSWORD}


def _from(ip: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": ip}}


def _login(client: Any, ip: str = "203.0.113.1", **credentials: str) -> Any:
    return client.post("/api/token/", json=credentials or {"username": "nobody", "password": "wrong-pass"}, **_from(ip))


def _registration(n: int) -> dict[str, str]:
    return {
        "username": f"newbie{n}",
        "email": f"newbie{n}@example.com",
        "password": PASSWORD,
        "password2": PASSWORD,
    }


def _assert_limited(response: Any, limit: int) -> None:
    """429 in the common error body, with Retry-After and the X-RateLimit-* headers."""
    body = assert_error(response, 429)
    assert body["status"] == "Too Many Requests" and "Retry-After" in body["message"]
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_the_eleventh_login_in_a_minute_from_one_ip_is_429(limited_app, user):
    app = limited_app()  # the default RATELIMIT_AUTH: 10/minute per IP
    client = app.test_client()

    answers = [_login(client).status_code for _ in range(10)]
    eleventh = _login(client)

    assert answers == [401] * 10
    _assert_limited(eleventh, 10)
    # Even the right password waits: a guesser cannot tell a hit from the lockout.
    _assert_limited(_login(client, **ALICE), 10)
    # Another client is not locked out by this one.
    assert _login(client, "203.0.113.2", **ALICE).status_code == 200


def test_sign_in_is_limited_per_account_from_any_number_of_addresses(limited_app, user):
    client = limited_app(RATELIMIT_AUTH="100/minute", RATELIMIT_ACCOUNT="5/minute").test_client()

    spread = [_login(client, f"198.51.100.{n}", username="alice", password="wrong").status_code for n in range(5)]
    sixth = _login(client, "198.51.100.77", username="ALICE", password="wrong")  # the same account, as people read it

    assert spread == [401] * 5
    _assert_limited(sixth, 5)
    # Another account is not held up by it.
    assert _login(client, "198.51.100.77", username="nobody", password="wrong").status_code == 401


def test_an_ipv6_client_is_one_client_across_its_64(limited_app):
    client = limited_app(RATELIMIT_AUTH="3/minute", RATELIMIT_ACCOUNT="100/minute").test_client()

    rotated = [_login(client, f"2001:db8:1:2::{n:x}").status_code for n in range(1, 4)]
    fourth = _login(client, "2001:db8:1:2:ffff:ffff:ffff:fffe")

    assert rotated == [401] * 3
    _assert_limited(fourth, 3)
    assert _login(client, "2001:db8:1:3::1").status_code == 401  # the next /64 is another client


def test_registration_is_limited_per_email_address_from_any_address(limited_app, user):
    """The contract answers a taken email with 422; finding out which addresses have accounts is slowed
    to RATELIMIT_ACCOUNT tries per address, wherever they come from."""
    client = limited_app(RATELIMIT_AUTH="100/minute", RATELIMIT_ACCOUNT="3/minute").test_client()
    probe = {**_registration(90), "email": "alice@example.com"}

    probes = [client.post("/api/users/", json=probe, **_from(f"198.51.100.{n}")).status_code for n in range(3)]
    fourth = client.post("/api/users/", json={**probe, "email": "ALICE@example.com"}, **_from("198.51.100.50"))

    assert probes == [422] * 3
    _assert_limited(fourth, 3)
    assert client.post("/api/users/", json=_registration(91), **_from("198.51.100.50")).status_code == 201


def test_a_limited_login_counts_in_the_metrics(limited_app):
    client = limited_app(RATELIMIT_AUTH="1/minute").test_client()
    before = _metric("shop_rate_limited_total")

    _login(client)
    assert _login(client).status_code == 429

    assert _metric("shop_rate_limited_total") == before + 1


def test_registration_is_limited_on_post_only(limited_app, staff):
    client = limited_app(RATELIMIT_AUTH="3/minute", RATELIMIT_USER="100/minute").test_client()
    staff_token = client.post("/api/token/", json={"username": "boss", "password": PASSWORD}).get_json()["access"]
    ip = _from("198.51.100.1")

    statuses = [client.post("/api/users/", json=_registration(n), **ip).status_code for n in range(3)]
    fourth = client.post("/api/users/", json=_registration(3), **ip)

    assert statuses == [201, 201, 201]
    _assert_limited(fourth, 3)
    # The staff list on the same path is counted on the staff member's own budget, not the auth one.
    listing = client.get("/api/users/", headers=bearer(staff_token), **ip)
    assert listing.status_code == 200 and listing.headers["X-RateLimit-Limit"] == "100"


def test_the_user_limit_follows_the_user_across_ips(limited_app, user, staff):
    client = limited_app(RATELIMIT_USER="3/minute", RATELIMIT_ANON="50/minute").test_client()
    alice = bearer(client.post("/api/token/", json=ALICE, **_from("192.0.2.1")).get_json()["access"])
    boss = bearer(client.post("/api/token/", json={"username": "boss", "password": PASSWORD}).get_json()["access"])

    spent = [client.get("/api/users/me/", headers=alice, **_from(ip)).status_code for ip in ("192.0.2.1", "192.0.2.2")]
    third = client.get("/api/users/me/", headers=alice, **_from("192.0.2.3"))
    fourth = client.get("/api/users/me/", headers=alice, **_from("192.0.2.4"))

    assert spent == [200, 200] and third.status_code == 200
    _assert_limited(fourth, 3)
    # Anonymous requests from alice's address and another user's requests have budgets of their own.
    assert client.get("/api/products/", **_from("192.0.2.1")).headers["X-RateLimit-Limit"] == "50"
    assert client.get("/api/users/me/", headers=boss, **_from("192.0.2.1")).status_code == 200


def test_the_anonymous_limit_is_one_budget_per_ip_across_routes(limited_app):
    client = limited_app(RATELIMIT_ANON="3/minute").test_client()

    statuses = [client.get(path, **_from("192.0.2.10")).status_code for path in ("/api/products/", "/api/categories/")]
    statuses.append(client.get("/api/users/me/", **_from("192.0.2.10")).status_code)
    fourth = client.get("/api/products/", **_from("192.0.2.10"))

    assert statuses == [200, 200, 401]
    _assert_limited(fourth, 3)
    assert client.get("/api/products/", **_from("192.0.2.11")).status_code == 200


def test_a_forged_token_cannot_spend_someone_elses_budget(limited_app, user):
    """The per-user key comes from a verified signature only; a forged token counts against its sender's IP."""
    import jwt

    client = limited_app(RATELIMIT_USER="2/minute", RATELIMIT_ANON="50/minute").test_client()
    alice = bearer(client.post("/api/token/", json=ALICE).get_json()["access"])
    victim_id = str(user.id)
    forged = jwt.encode({"sub": victim_id, "type": "access", "jti": "x", "exp": int(time.time()) + 60}, "guess")

    for _ in range(3):
        assert client.get("/api/users/me/", headers=bearer(forged), **_from("192.0.2.66")).status_code == 401

    assert client.get("/api/users/me/", headers=alice).status_code == 200


def test_forwarded_for_is_ignored_without_trusted_proxies(limited_app):
    client = limited_app(RATELIMIT_AUTH="2/minute", TRUSTED_PROXIES=0).test_client()

    statuses = [
        client.post("/api/token/", json={"username": "x", "password": "y"}, headers={"X-Forwarded-For": f"10.9.9.{n}"})
        for n in range(3)
    ]

    assert [response.status_code for response in statuses[:2]] == [401, 401]
    _assert_limited(statuses[2], 2)


def test_forwarded_for_is_trusted_through_the_configured_proxies_only(limited_app):
    """Behind one proxy the client is the last X-Forwarded-For entry; what the client wrote before it is ignored."""
    client = limited_app(RATELIMIT_AUTH="2/minute", TRUSTED_PROXIES=1).test_client()

    def login(forwarded_for: str) -> int:
        credentials = {"username": "x", "password": "y"}
        headers = {"X-Forwarded-For": forwarded_for}
        return client.post("/api/token/", json=credentials, headers=headers, **_from("127.0.0.1")).status_code

    # One client spoofing a different left-hand part each time still has one budget.
    assert [login(f"1.1.1.{n}, 203.0.113.7") for n in range(3)] == [401, 401, 429]
    # Another client behind the same proxy has its own.
    assert login("203.0.113.8") == 401
    # Two proxies' worth of entries with one trusted hop: still the last entry.
    assert login("203.0.113.7, 203.0.113.9") == 401
    # A garbage entry where the proxy writes the address falls back to the proxy's own address.
    assert [login("not-an-ip") for _ in range(3)] == [401, 401, 429]


def test_operations_routes_are_never_limited(limited_app):
    client = limited_app(RATELIMIT_ANON="1/minute").test_client()

    for _ in range(3):
        for path in ("/healthz", "/readyz", "/metrics"):
            response = client.get(path, **_from("192.0.2.20"))
            assert response.status_code == 200, path
            assert "X-RateLimit-Limit" not in response.headers

    # They did not spend the client's budget either.
    assert client.get("/api/products/", **_from("192.0.2.20")).status_code == 200
    assert client.get("/api/products/", **_from("192.0.2.20")).status_code == 429


def test_limits_can_be_switched_off(limited_app):
    client = limited_app(RATELIMIT_ENABLED=False, RATELIMIT_AUTH="1/minute").test_client()

    assert [_login(client).status_code for _ in range(3)] == [401, 401, 401]


# Redis: counters shared by every worker, one round trip a check, and outages.


def _redis_limited_app(limited_app: Callable[..., Any], server: RedisServer, **overrides: Any) -> Any:
    url = server.url(4)
    storage_options = load_config({"REDIS_URL": url})["RATELIMIT_STORAGE_OPTIONS"]
    assert storage_options["socket_timeout"] <= 0.25 and storage_options["socket_connect_timeout"] <= 0.25
    return limited_app(RATELIMIT_STORAGE_URI=url, RATELIMIT_STORAGE_OPTIONS=storage_options, **overrides)


def _commands_sent(server: RedisServer, action: Callable[[], Any]) -> list[str]:
    """The commands clients sent to Redis while `action` ran (not those a Lua script ran inside Redis)."""
    marker = f"end-of-action-{uuid.uuid4()}"
    marker_client = server.client()
    marker_client.ping()  # connected before watching: its handshake is not counted
    with server.client().monitor() as monitor:
        action()
        marker_client.echo(marker)
        commands = []
        while True:
            command = monitor.next_command()
            if marker in command["command"]:
                break
            if command["client_type"] != "lua":
                commands.append(command["command"].split()[0].upper())
    return commands


def test_limits_live_in_redis_with_one_round_trip_a_check(limited_app, private_redis):
    app = _redis_limited_app(limited_app, private_redis, RATELIMIT_ANON="5/minute", RATELIMIT_AUTH="5/minute")
    client = app.test_client()
    assert isinstance(limiter.limiter, OneCallFixedWindow)
    client.get("/api/users/me/", **_from("192.0.2.30"))  # loads the script into this Redis once
    _login(client, "192.0.2.31")  # and connects flask-limiter's client (the credential limit) once

    responses: list[Any] = []
    anonymous = _commands_sent(
        private_redis, lambda: responses.append(client.get("/api/users/me/", **_from("192.0.2.30")))
    )
    login = _commands_sent(private_redis, lambda: responses.append(_login(client, "192.0.2.30")))

    # A sign-in counts against two limits, the client's and the account's: one call each.
    assert anonymous == ["EVALSHA"] and login == ["EVALSHA", "EVALSHA"]
    # The headers come from that one call: the second anonymous request left 3 of 5.
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["3", "4"]
    assert 0 < int(responses[0].headers["X-RateLimit-Reset"]) - time.time() <= 61
    assert "Retry-After" not in responses[0].headers  # a 401, not a 429: nothing to wait for
    store = private_redis.client(4)
    keys = {key.decode(): store.pttl(key) for key in store.scan_iter(match="LIMITS:*")}
    assert any("ip:192.0.2.30/api/5/1/minute" in key for key in keys), keys
    assert all(0 < ttl <= 60_000 for ttl in keys.values())


def test_redis_down_falls_back_to_in_process_limits_and_recovers(limited_app, private_redis, caplog):
    app = _redis_limited_app(limited_app, private_redis, RATELIMIT_AUTH="3/minute")
    client = app.test_client()
    assert _login(client, "192.0.2.40").status_code == 401
    fallbacks = _metric("shop_rate_limit_fallbacks_total")

    private_redis.stop()
    during_outage = [_login(client, "192.0.2.41").status_code for _ in range(4)]

    assert during_outage == [401, 401, 401, 429]  # served, never a 500, and still limited
    assert _metric("shop_rate_limit_fallbacks_total") >= fallbacks + 4
    assert any("falling back to in-memory storage" in record.getMessage() for record in caplog.records)

    private_redis.start()
    deadline = time.monotonic() + 30
    while not list(private_redis.client(4).scan_iter(match="LIMITS:*192.0.2.42*")):
        assert time.monotonic() < deadline, "the limiter did not go back to Redis"
        assert _login(client, "192.0.2.42").status_code in {401, 429}
        time.sleep(0.5)


def test_a_frozen_redis_does_not_hang_requests(limited_app, private_redis):
    """Redis stops answering without closing connections: the 0.25 s socket timeouts keep requests flowing."""
    app = _redis_limited_app(limited_app, private_redis, RATELIMIT_ANON="100/minute")
    client = app.test_client()
    assert client.get("/api/products/", **_from("192.0.2.50")).status_code == 200

    private_redis.pause()
    try:
        statuses = [client.get("/api/products/", **_from("192.0.2.50")).status_code for _ in range(3)]
    finally:
        private_redis.resume()

    assert statuses == [200, 200, 200]


def test_the_user_limit_is_shared_by_every_app_instance_through_redis(limited_app, private_redis, app):
    """Two app instances (as two gunicorn workers or hosts) count one user's requests together."""
    with app.app_context():
        make_user(username="carol", password=PASSWORD)
    first = _redis_limited_app(limited_app, private_redis, RATELIMIT_USER="2/minute").test_client()
    token = bearer(first.post("/api/token/", json={"username": "carol", "password": PASSWORD}).get_json()["access"])
    assert first.get("/api/users/me/", headers=token).status_code == 200

    second = _redis_limited_app(limited_app, private_redis, RATELIMIT_USER="2/minute").test_client()

    assert second.get("/api/users/me/", headers=token).status_code == 200
    _assert_limited(second.get("/api/users/me/", headers=token), 2)


# The API budget (shop.infra.ratelimit.RateLimits): one counter per client in Redis, its script in
# the request's round trip; in-process counters while Redis is away.


def test_the_api_budget_in_redis_answers_429_in_the_common_body(limited_app, private_redis):
    client = _redis_limited_app(limited_app, private_redis, RATELIMIT_ANON="2/minute").test_client()

    statuses = [client.get("/api/categories/", **_from("192.0.2.60")).status_code for _ in range(2)]
    refused = client.get("/api/products/", **_from("192.0.2.60"))

    assert statuses == [200, 200]
    _assert_limited(refused, 2)
    store = private_redis.client(4)
    (key,) = [key.decode() for key in store.scan_iter(match="LIMITS:*192.0.2.60*")]
    assert key == "LIMITS:LIMITER/ip:192.0.2.60/api/2/1/minute" and 0 < store.pttl(key) <= 60_000


def test_the_api_budget_falls_back_to_in_process_counters_while_redis_is_down(limited_app, private_redis):
    app = _redis_limited_app(limited_app, private_redis, RATELIMIT_ANON="3/minute", RATELIMIT_RETRY_SECONDS=0)
    client = app.test_client()
    assert client.get("/api/categories/", **_from("192.0.2.70")).status_code == 200
    fallbacks = _metric("shop_rate_limit_fallbacks_total")

    private_redis.stop()
    during_outage = [client.get("/api/categories/", **_from("192.0.2.71")).status_code for _ in range(4)]

    assert during_outage == [200, 200, 200, 429]  # served without Redis, and still limited
    assert _metric("shop_rate_limit_fallbacks_total") == fallbacks + 4

    private_redis.start()
    assert client.get("/api/categories/", **_from("192.0.2.72")).status_code == 200
    assert list(private_redis.client(4).scan_iter(match="LIMITS:*192.0.2.72*"))  # counted in Redis again
    assert _metric("shop_rate_limit_fallbacks_total") == fallbacks + 4


def test_an_error_answered_before_any_view_still_counts_and_carries_the_headers(limited_app, private_redis):
    client = _redis_limited_app(limited_app, private_redis, RATELIMIT_ANON="5/minute").test_client()
    # Refused before the view runs (the body is not JSON): the deferred increment is sent anyway.
    bad = client.post("/api/orders/", data="not json", content_type="text/plain", **_from("192.0.2.80"))

    assert bad.status_code == 400 and bad.headers["X-RateLimit-Remaining"] == "4"
    assert client.get("/api/categories/", **_from("192.0.2.80")).headers["X-RateLimit-Remaining"] == "3"
