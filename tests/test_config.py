"""Configuration comes from the environment; production refuses to start without its secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shop.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_need_no_services():
    config = load_config({})

    assert config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert config["CACHE_TYPE"] == "SimpleCache" and config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert config["CELERY"]["task_always_eager"] is True
    assert config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds() == 15 * 60
    assert config["JWT_REFRESH_TOKEN_EXPIRES"].days == 7


def test_services_from_the_environment():
    config = load_config(
        {
            "DATABASE_URL": "postgres://u@db:5432/shop",
            "REDIS_URL": "redis://cache:6379/2",
            "CELERY_BROKER_URL": "amqp://guest:guest@mq:5672//",
            "CORS_ORIGINS": "https://shop.example, https://admin.shop.example",
            "JWT_ACCESS_MINUTES": "5",
        }
    )

    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://u@db:5432/shop"
    assert config["CACHE_TYPE"] == "RedisCache" and config["RATELIMIT_STORAGE_URI"] == "redis://cache:6379/2"
    assert config["CELERY"]["task_always_eager"] is False
    assert config["CORS_ORIGINS"] == ["https://shop.example", "https://admin.shop.example"]
    assert config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds() == 300


def test_pooled_connections_are_pinged_only_when_asked():
    postgres = {"DATABASE_URL": "postgresql://u@db:5432/shop"}

    default = load_config(postgres)["SQLALCHEMY_ENGINE_OPTIONS"]
    asked = load_config({**postgres, "DB_POOL_PRE_PING": "true", "DB_POOL_RECYCLE_SECONDS": "60"})

    assert default["pool_pre_ping"] is False and default["pool_recycle"] == 1800
    assert asked["SQLALCHEMY_ENGINE_OPTIONS"]["pool_pre_ping"] is True
    assert asked["SQLALCHEMY_ENGINE_OPTIONS"]["pool_recycle"] == 60


def test_production_without_secrets_is_refused():
    with pytest.raises(ConfigError, match="SECRET_KEY and JWT_SECRET_KEY"):
        load_config({"APP_ENV": "production"})


def test_bad_integer_is_named():
    with pytest.raises(ConfigError, match="JWT_ACCESS_MINUTES"):
        load_config({"JWT_ACCESS_MINUTES": "soon"})


@pytest.mark.parametrize("module", ["wsgi", "celery_worker"])
def test_production_start_without_secrets_says_why_without_a_traceback(module):
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "JWT_SECRET_KEY"}}
    env["APP_ENV"] = "production"

    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert "SECRET_KEY and JWT_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr
