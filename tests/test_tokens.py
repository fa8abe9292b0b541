"""Token pairs: obtain, refresh with rotation, revoke, and a 401 for every token fault."""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token, create_refresh_token

from tests.conftest import PASSWORD, bearer, token_for


def _assert_401(response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = response.get_json()
    assert body["code"] == 401 and body["status"] == "Unauthorized" and body["message"]


def test_obtain_refresh_revoke(client, user):
    pair = token_for(client, "alice")
    assert client.get("/api/users/me/", headers=bearer(pair["access"])).status_code == 200

    refreshed = client.post("/api/token/refresh/", json={"refresh": pair["refresh"]})
    assert refreshed.status_code == 200
    new_pair = refreshed.get_json()
    assert set(new_pair) == {"access", "refresh"}
    assert client.get("/api/users/me/", headers=bearer(new_pair["access"])).status_code == 200

    revoked = client.post(
        "/api/token/revoke/", headers=bearer(new_pair["access"]), json={"refresh": new_pair["refresh"]}
    )
    assert revoked.status_code == 204
    _assert_401(client.get("/api/users/me/", headers=bearer(new_pair["access"])))
    _assert_401(client.post("/api/token/refresh/", json={"refresh": new_pair["refresh"]}))


def test_spent_refresh_token_is_401(client, user):
    pair = token_for(client, "alice")
    assert client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}).status_code == 200

    _assert_401(client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}))


def test_concurrent_refreshes_of_one_token_give_one_pair(app, client, user):
    pair = token_for(client, "alice")
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def refresh() -> None:
        local = app.test_client()
        barrier.wait()
        statuses.append(local.post("/api/token/refresh/", json={"refresh": pair["refresh"]}).status_code)

    threads = [threading.Thread(target=refresh) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] + [401] * 5


def test_wrong_credentials_are_401_the_same_for_unknown_user(client, user):
    wrong_password = client.post("/api/token/", json={"username": "alice", "password": "wrong-password"})
    unknown_user = client.post("/api/token/", json={"username": "nobody", "password": "wrong-password"})

    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.get_json() == unknown_user.get_json()


def _forge(claims: dict, header: dict, key: str | None = None) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    if key is None:
        return f"{part(header)}.{part(claims)}."
    return pyjwt.encode(claims, key, algorithm=header["alg"], headers=header)


@pytest.fixture
def access_claims(app, user) -> dict:
    with app.app_context():
        token = create_access_token(identity=user.id)
        return pyjwt.decode(token, options={"verify_signature": False})


@pytest.mark.parametrize(
    "make_header",
    [
        pytest.param(lambda app, claims: {}, id="missing"),
        pytest.param(lambda app, claims: {"Authorization": "Bearer"}, id="empty-bearer"),
        pytest.param(lambda app, claims: {"Authorization": "Token abc"}, id="wrong-scheme"),
        pytest.param(lambda app, claims: bearer("not.a.jwt"), id="malformed"),
        pytest.param(lambda app, claims: bearer("abc"), id="garbage"),
        pytest.param(
            lambda app, claims: bearer(
                _forge(claims, {"alg": "HS256", "typ": "JWT"}, "another-secret-of-32-bytes-or-more")
            ),
            id="bad-signature",
        ),
        pytest.param(lambda app, claims: bearer(_forge(claims, {"alg": "none", "typ": "JWT"})), id="alg-none"),
        pytest.param(
            lambda app, claims: bearer(_forge(claims, {"alg": "HS512", "typ": "JWT"}, app.config["JWT_SECRET_KEY"])),
            id="other-alg",
        ),
        pytest.param(
            lambda app, claims: bearer(
                _forge(
                    {**claims, "exp": claims["iat"] - 10}, {"alg": "HS256", "typ": "JWT"}, app.config["JWT_SECRET_KEY"]
                )
            ),
            id="expired",
        ),
    ],
)
def test_every_token_fault_is_401(app, client, access_claims, make_header):
    _assert_401(client.get("/api/users/me/", headers=make_header(app, access_claims)))


def test_expired_token_is_401(app, client, user):
    with app.app_context():
        token = create_access_token(identity=user.id, expires_delta=timedelta(seconds=-5))

    _assert_401(client.get("/api/users/me/", headers=bearer(token)))


def test_refresh_token_used_as_access_is_401(app, client, user):
    pair = token_for(client, "alice")

    _assert_401(client.get("/api/users/me/", headers=bearer(pair["refresh"])))


def test_access_token_used_as_refresh_is_401(client, user):
    pair = token_for(client, "alice")

    _assert_401(client.post("/api/token/refresh/", json={"refresh": pair["access"]}))


def test_logout_without_a_body_ends_the_whole_session(client, user):
    pair = token_for(client, "alice")
    assert client.post("/api/token/revoke/", headers=bearer(pair["access"])).status_code == 204

    _assert_401(client.get("/api/users/me/", headers=bearer(pair["access"])))
    # the refresh token was not given, but it belongs to the session that ended
    _assert_401(client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}))


def test_revoke_refuses_another_users_refresh_token(app, client, user, staff):
    mine = token_for(client, "alice")
    with app.app_context():
        theirs = create_refresh_token(identity=staff.id)

    _assert_401(client.post("/api/token/revoke/", headers=bearer(mine["access"]), json={"refresh": theirs}))


def test_token_for_a_deleted_user_is_401(app, client):
    with app.app_context():
        token = create_access_token(identity=999999)

    _assert_401(client.get("/api/users/me/", headers=bearer(token)))


def test_password_in_token_request_is_required(client):
    response = client.post("/api/token/", json={"username": "alice"})

    assert response.status_code == 422


def test_login_with_real_password(client, user):
    assert set(token_for(client, "alice", PASSWORD)) == {"access", "refresh"}
