"""Secrets that fail closed: every APP_ENV but development and testing gets production's rules."""

from __future__ import annotations

import secrets

import pytest

from shop.config import DEV_SECRET, ConfigError, load_config

STRONG, OTHER = secrets.token_hex(32), secrets.token_hex(32)


@pytest.mark.parametrize("app_env", ["production", "Production", "prod", "staging", "PRODUCTION ", "", "qa"])
def test_any_other_environment_name_refuses_to_start_without_its_secrets(app_env: str) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY and JWT_SECRET_KEY"):
        load_config({"APP_ENV": app_env})


@pytest.mark.parametrize(
    ("secret_key", "jwt_secret", "says"),
    [
        ("x", OTHER, "SECRET_KEY is shorter than 32 bytes"),
        (STRONG, "short-but-not-32-bytes", "JWT_SECRET_KEY is shorter than 32 bytes"),
        (DEV_SECRET, OTHER, "SECRET_KEY is a published example value"),
        (STRONG, "change-me-to-another-long-random-string", "JWT_SECRET_KEY is a published example value"),
        ("change-me-to-a-long-random-string", OTHER, "SECRET_KEY is a published example value"),
        (STRONG, STRONG, "SECRET_KEY and JWT_SECRET_KEY are the same value"),
    ],
)
def test_production_refuses_weak_published_or_shared_secrets_and_says_which(
    secret_key: str, jwt_secret: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config({"APP_ENV": "staging", "SECRET_KEY": secret_key, "JWT_SECRET_KEY": jwt_secret})


def test_production_starts_with_two_long_random_secrets() -> None:
    config = load_config({"APP_ENV": "prod", "SECRET_KEY": STRONG, "JWT_SECRET_KEY": OTHER})

    assert config["JWT_SECRET_KEY"] == OTHER and config["SECRET_KEY"] == STRONG


@pytest.mark.parametrize("app_env", ["development", "testing"])
def test_development_and_testing_run_on_the_development_secret(app_env: str) -> None:
    assert load_config({"APP_ENV": app_env})["JWT_SECRET_KEY"] == DEV_SECRET
