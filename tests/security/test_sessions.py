"""Sessions that end when they should (OWASP API2): password change, refresh reuse, logout, log out
everywhere, an admin's deactivation and password reset, and an absolute lifetime (RFC 9700 4.14)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt as pyjwt
from flask import Flask

from shop.core.time import utcnow
from shop.extensions import db
from shop.users.models import UserSession
from tests.conftest import PASSWORD, bearer, token_for
from tests.querycount import count_statements
from tests.redis_server import commands_sent
from tests.security.conftest import RedisServer, assert_error

NEW_PASSWORD = "a-brand-new-pass-phrase"


def _me(client: Any, pair: dict[str, str]) -> int:
    return client.get("/api/users/me/", headers=bearer(pair["access"])).status_code


def _refresh(client: Any, pair: dict[str, str]) -> Any:
    return client.post("/api/token/refresh/", json={"refresh": pair["refresh"]})


def _claims(token: str) -> dict[str, Any]:
    return pyjwt.decode(token, options={"verify_signature": False})


def test_a_password_change_ends_every_other_session_and_the_current_goes_on(client: Any, user) -> None:
    mine, thiefs = token_for(client, "alice"), token_for(client, "alice")
    thiefs_next = _refresh(client, thiefs).get_json()  # a thief keeps refreshing: a fresh pair each time

    response = client.post(
        "/api/users/me/password/",
        json={"old_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        headers=bearer(mine["access"]),
    )

    assert response.status_code == 204 and response.data == b""
    assert _me(client, thiefs_next) == 401
    assert_error(_refresh(client, thiefs_next), 401)
    assert _me(client, mine) == 200
    assert _refresh(client, mine).status_code == 200


def test_reuse_of_a_spent_refresh_token_ends_the_whole_family(client: Any, user) -> None:
    stolen = token_for(client, "alice")
    owners = _refresh(client, stolen).get_json()  # the owner refreshed; the thief holds the spent token

    replay = _refresh(client, stolen)

    body = assert_error(replay, 401)
    assert "session has ended" in body["message"]
    # The pair already issued from it is refused too: theft detected and contained.
    assert _me(client, owners) == 401
    assert_error(_refresh(client, owners), 401)


def test_a_spent_refresh_token_replayed_first_by_the_thief_also_ends_the_family(client: Any, user) -> None:
    pair = token_for(client, "alice")
    thiefs = _refresh(client, pair).get_json()  # the thief refreshed first with a copied token

    assert_error(_refresh(client, pair), 401)  # the owner's honest refresh is now a replay
    assert _me(client, thiefs) == 401


def test_logout_without_a_body_ends_the_refresh_token_too(client: Any, user) -> None:
    pair, other = token_for(client, "alice"), token_for(client, "alice")

    assert client.post("/api/token/revoke/", headers=bearer(pair["access"])).status_code == 204

    assert _me(client, pair) == 401
    assert_error(_refresh(client, pair), 401)
    assert _me(client, other) == 200  # another device's session is not this one


def test_log_out_everywhere_ends_every_session_and_a_new_sign_in_works(client: Any, user) -> None:
    sessions = [token_for(client, "alice") for _ in range(3)]

    response = client.post("/api/users/me/sessions/revoke/", headers=bearer(sessions[0]["access"]))

    assert response.status_code == 204
    for pair in sessions:
        assert _me(client, pair) == 401
        assert_error(_refresh(client, pair), 401)
    assert _me(client, token_for(client, "alice")) == 200  # signed in again at once


def test_no_refresh_carries_a_session_past_its_absolute_end(app: Flask, client: Any, user) -> None:
    pair = token_for(client, "alice")
    claims = _claims(pair["refresh"])
    with app.app_context():
        session = db.session.get(UserSession, claims["sid"])
        assert session.expires_at - session.created_at == timedelta(days=30)
        session.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()

    assert_error(_refresh(client, pair), 401)


def test_tokens_issued_near_the_session_end_expire_with_it(app: Flask, client: Any, user) -> None:
    pair = token_for(client, "alice")
    sid = _claims(pair["refresh"])["sid"]
    with app.app_context():
        db.session.get(UserSession, sid).expires_at = utcnow() + timedelta(minutes=5)
        db.session.commit()

    renewed = _refresh(client, pair).get_json()

    end = time.time() + 5 * 60 + 2
    assert _claims(renewed["refresh"])["exp"] <= end and _claims(renewed["access"])["exp"] <= end


def test_an_admin_deactivating_a_user_ends_their_sessions_for_good(client: Any, user, admin_headers) -> None:
    pair = token_for(client, "alice")

    deactivated = client.patch(f"/api/users/{user.id}/", json={"is_active": False}, headers=admin_headers)
    assert deactivated.status_code == 200 and deactivated.get_json()["is_active"] is False
    assert _me(client, pair) == 401

    client.patch(f"/api/users/{user.id}/", json={"is_active": True}, headers=admin_headers)
    assert _me(client, pair) == 401  # reactivation does not bring the old tokens back
    assert_error(_refresh(client, pair), 401)
    assert _me(client, token_for(client, "alice")) == 200


def test_an_admins_password_reset_ends_every_session(client: Any, user, admin_headers) -> None:
    pair = token_for(client, "alice")

    reset = client.patch(f"/api/users/{user.id}/", json={"password": NEW_PASSWORD}, headers=admin_headers)

    assert reset.status_code == 200 and "password" not in reset.get_json()
    assert _me(client, pair) == 401
    assert_error(_refresh(client, pair), 401)
    assert _me(client, token_for(client, "alice", NEW_PASSWORD)) == 200


def test_a_refresh_token_without_a_session_is_refused(app: Flask, client: Any, user) -> None:
    from flask_jwt_extended import create_refresh_token

    with app.app_context():
        loose = create_refresh_token(identity=user.id)

    assert_error(client.post("/api/token/refresh/", json={"refresh": loose}), 401)


def test_a_session_is_one_row_however_often_it_is_refreshed(app: Flask, client: Any, user) -> None:
    pair = token_for(client, "alice")
    for _ in range(5):
        pair = _refresh(client, pair).get_json()

    with app.app_context():
        rows = db.session.scalars(db.select(UserSession).where(UserSession.user_id == user.id)).all()
    assert len(rows) == 1 and rows[0].refresh_jti == _claims(pair["refresh"])["jti"]


def test_the_token_check_reads_one_row_and_tokens_valid_after_rides_on_it(app: Flask, client: Any, user) -> None:
    headers = bearer(token_for(client, "alice")["access"])
    client.get("/api/users/me/", headers=headers)

    with count_statements(app) as statements:
        assert client.get("/api/users/me/", headers=headers).status_code == 200

    users = [statement for statement in statements if "FROM users" in statement]
    assert len(users) == 1 and "tokens_valid_after" in users[0]
    # Nothing else but, while Redis is not known complete, the session's own row (REDIS_URL set).
    assert all("WHERE user_sessions.id" in statement for statement in statements if statement not in users)


# With Redis: one round trip a check, and a refill that never runs inside a request.


def _ready(server: RedisServer) -> bool:
    return any(key.endswith(b"sessions-ended:ready") for key in server.client(4).scan_iter())


def _wait_until_ready(server: RedisServer) -> None:
    deadline = time.monotonic() + 10
    while not _ready(server):
        assert time.monotonic() < deadline, "Redis was not refilled"
        time.sleep(0.02)


def test_the_session_check_is_one_redis_command(redis_app: Flask, private_redis: RedisServer, user) -> None:
    client = redis_app.test_client()
    pair = token_for(client, "alice")
    assert _me(client, pair) == 200
    _wait_until_ready(private_redis)

    assert commands_sent(private_redis, lambda: _me(client, pair)) == ["MGET"]


def test_a_redis_refill_runs_outside_the_request(redis_app: Flask, private_redis: RedisServer, user) -> None:
    client = redis_app.test_client()
    ended, live = token_for(client, "alice"), token_for(client, "alice")
    client.post("/api/token/revoke/", headers=bearer(ended["access"]))
    private_redis.client(4).flushdb()  # Redis lost everything, the ready marker included

    with count_statements(redis_app) as statements:
        assert _me(client, ended) == 401
    # The request asked the database about its own session only (and stopped there: the token was refused).
    assert len(statements) == 1 and "user_sessions" in statements[0] and "WHERE user_sessions.id" in statements[0]
    assert _me(client, live) == 200
    _wait_until_ready(private_redis)
    assert _me(client, ended) == 401
    assert any(
        b"session-ended:" + _claims(ended["access"])["sid"].encode() in k for k in private_redis.client(4).scan_iter()
    )


def test_an_admin_cannot_lock_themselves_out(client, admin, admin_headers) -> None:
    for change in ({"is_active": False}, {"role": "customer"}, {"password": NEW_PASSWORD}):
        assert_error(client.patch(f"/api/users/{admin.id}/", json=change, headers=admin_headers), 409)
    assert client.get("/api/users/", headers=admin_headers).status_code == 200
