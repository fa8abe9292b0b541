"""Registration, profile, password change and the staff list, through the HTTP API."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from shop.extensions import db
from shop.users.models import User
from tests.conftest import PASSWORD, token_for

C1_REQUEST = {
    "username": "john_doe",
    "password": "securepassword123",
    "password2": "securepassword123",
    "email": "john@example.com",
    "first_name": "John",
    "last_name": "Doe",
    "phone_number": "1234567890",
}


def test_registration_answers_the_seed_c1_shape(client, app):
    response = client.post("/api/users/", json=C1_REQUEST)

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "username", "email", "first_name", "last_name", "phone_number"}
    assert body["username"] == "john_doe" and body["phone_number"] == "1234567890"
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == "john_doe"))
        assert user.password_hash != "securepassword123"
        assert user.check_password("securepassword123")
        assert not user.is_staff


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"password2": "different-password"}, "password2"),
        ({"password": "12345678901", "password2": "12345678901"}, "password"),
        ({"password": "short", "password2": "short"}, "password"),
        ({"password": "john_doe", "password2": "john_doe"}, "password"),
        ({"username": "no spaces allowed"}, "username"),
        ({"username": "ab"}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"is_staff": True}, "is_staff"),
        ({"id": 7}, "id"),
        ({"username": 12345}, "username"),
    ],
)
def test_bad_registration_is_422_and_writes_nothing(client, app, change, field):
    response = client.post("/api/users/", json={**C1_REQUEST, **change})

    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == 422 and body["status"] == "Unprocessable Entity" and body["message"]
    assert field in str(body["errors"])
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 0


def test_missing_fields_are_named(client):
    response = client.post("/api/users/", json={"username": "x_user"})

    assert response.status_code == 422
    assert {"password", "password2", "email"} <= set(response.get_json()["errors"]["json"])


def test_username_and_email_are_unique_email_ignoring_case(client, user):
    same_name = client.post("/api/users/", json={**C1_REQUEST, "username": "alice"})
    same_email = client.post("/api/users/", json={**C1_REQUEST, "email": "ALICE@Example.com"})

    assert same_name.status_code == 422 and "username" in same_name.get_json()["errors"]["json"]
    assert same_email.status_code == 422 and "email" in same_email.get_json()["errors"]["json"]


def test_concurrent_registrations_of_one_name_give_one_201_and_422s(app):
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def register(n: int) -> None:
        client = app.test_client()
        barrier.wait()
        body = {**C1_REQUEST, "email": f"racer{n}@example.com"}
        statuses.append(client.post("/api/users/", json=body).status_code)

    threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [201] + [422] * 7
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_profile_read_and_update(client, user_headers):
    me = client.get("/api/users/me/", headers=user_headers)
    assert me.status_code == 200 and me.get_json()["username"] == "alice"

    changed = client.patch(
        "/api/users/me/", headers=user_headers, json={"first_name": "Alice", "phone_number": "+44 20 7946"}
    )

    assert changed.status_code == 200
    assert changed.get_json()["first_name"] == "Alice"
    assert client.get("/api/users/me/", headers=user_headers).get_json()["phone_number"] == "+44 20 7946"


@pytest.mark.parametrize("field", ["is_staff", "username", "id", "password", "is_active"])
def test_profile_refuses_fields_a_user_may_not_set(client, user_headers, app, field):
    response = client.patch("/api/users/me/", headers=user_headers, json={field: True})

    assert response.status_code == 422
    with app.app_context():
        alice = db.session.scalar(select(User).where(User.username == "alice"))
        assert not alice.is_staff and alice.is_active


def test_profile_email_taken_by_another_user_is_422(client, user_headers, staff):
    response = client.patch("/api/users/me/", headers=user_headers, json={"email": "BOSS@example.com"})

    assert response.status_code == 422 and "email" in response.get_json()["errors"]["json"]


def test_password_change(client, user_headers):
    wrong = client.post(
        "/api/users/me/password/",
        headers=user_headers,
        json={"old_password": "nope-nope", "new_password": "new-password-9", "new_password2": "new-password-9"},
    )
    assert wrong.status_code == 422

    mismatch = client.post(
        "/api/users/me/password/",
        headers=user_headers,
        json={"old_password": PASSWORD, "new_password": "new-password-9", "new_password2": "new-password-8"},
    )
    assert mismatch.status_code == 422 and "new_password2" in mismatch.get_json()["errors"]["json"]

    ok = client.post(
        "/api/users/me/password/",
        headers=user_headers,
        json={"old_password": PASSWORD, "new_password": "new-password-9", "new_password2": "new-password-9"},
    )

    assert ok.status_code == 204
    assert client.post("/api/token/", json={"username": "alice", "password": PASSWORD}).status_code == 401
    assert token_for(client, "alice", "new-password-9")["access"]


def test_staff_list_users_paginated(client, staff_headers, user):
    response = client.get("/api/users/?page_size=1", headers=staff_headers)

    assert response.status_code == 200
    assert len(response.get_json()) == 1
    assert '"total": 2' in response.headers["X-Pagination"]


def test_customer_cannot_list_users(client, user_headers):
    response = client.get("/api/users/", headers=user_headers)

    assert response.status_code == 403
    assert response.get_json()["code"] == 403


def test_anonymous_cannot_read_profile(client):
    response = client.get("/api/users/me/")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_deactivated_user_token_stops_working(client, user_headers, app):
    with app.app_context():
        alice = db.session.scalar(select(User).where(User.username == "alice"))
        alice.is_active = False
        db.session.commit()

    assert client.get("/api/users/me/", headers=user_headers).status_code == 401
