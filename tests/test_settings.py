from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import envbool, envchoice, envfloat, envint, envlist
from tests.subprocesses import manage, project_env


def test_typed_helpers_read_good_values(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", " 42 ")
    monkeypatch.setenv("X_FLOAT", "2.5")
    monkeypatch.setenv("X_LIST", "a.example, b.example,")
    monkeypatch.setenv("X_CHOICE", " Core ")
    assert envbool("X_BOOL", False) is True
    assert envint("X_INT", 1, minimum=1) == 42
    assert envfloat("X_FLOAT", 1.0) == 2.5
    assert envlist("X_LIST", []) == ["a.example", "b.example"]
    assert envint("X_UNSET", 7) == 7
    assert envchoice("X_CHOICE", "pubsub", ("pubsub", "core")) == "core"
    assert envchoice("X_UNSET", "pubsub", ("pubsub", "core")) == "pubsub"


@pytest.mark.parametrize(
    ("value", "reader", "message"),
    [
        ("maybe", lambda: envbool("X", False), "X must be one of"),
        ("ten", lambda: envint("X", 1), "X must be a whole number"),
        ("-1", lambda: envint("X", 1, minimum=0), "X must be at least 0"),
        ("nan", lambda: envfloat("X", 1.0), "X must be a finite number"),
        ("inf", lambda: envfloat("X", 1.0), "X must be a finite number"),
        ("fast", lambda: envfloat("X", 1.0), "X must be a number"),
        ("101", lambda: envfloat("X", 1.0, maximum=100), "X must be at most 100"),
        ("lists", lambda: envchoice("X", "a", ("a", "b")), "X must be one of a, b; got 'lists'"),
    ],
)
def test_typed_helpers_refuse_bad_values_clearly(monkeypatch, value, reader, message):
    monkeypatch.setenv("X", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        reader()


@pytest.mark.slow
def test_a_bad_setting_stops_the_server_with_a_clear_message(tmp_path):
    result = manage(
        "check", env=project_env(PAUSE_SECONDS="soon", DATABASE_URL=f"sqlite:///{tmp_path}/db")
    )
    assert result.returncode != 0
    assert "PAUSE_SECONDS must be a number; got 'soon'" in result.stderr


@pytest.mark.slow
def test_production_settings_pass_the_deploy_check(tmp_path):
    env = project_env(
        DEBUG="0",
        SECRET_KEY="x" * 30 + "-a-real-and-long-production-secret-key",
        ALLOWED_HOSTS="offers.shop.example",
        DATABASE_URL=f"sqlite:///{tmp_path}/db",
    )
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_production_refuses_the_development_secret_key(tmp_path):
    result = manage("check", env=project_env(DEBUG="0", DATABASE_URL=f"sqlite:///{tmp_path}/db"))
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG=0" in result.stderr


def test_without_redis_url_the_channel_layer_is_in_memory(settings):
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def read_settings(tmp_path, *names: str, **environ: str) -> list[str]:
    env = project_env(**{"DATABASE_URL": f"sqlite:///{tmp_path}/db", **environ})
    code = "from django.conf import settings as s; " + "; ".join(f"print(s.{n})" for n in names)
    result = manage("shell", "-v", "0", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.slow
def test_redis_mode_takes_the_pubsub_layer_unless_told_core_with_its_capacity_and_expiry(tmp_path):
    (pubsub,) = read_settings(tmp_path, "CHANNEL_LAYERS", REDIS_URL="redis://127.0.0.1:6379/0")
    assert "channels_redis.pubsub.RedisPubSubChannelLayer" in pubsub
    (core,) = read_settings(
        tmp_path,
        "CHANNEL_LAYERS",
        REDIS_URL="redis://127.0.0.1:6379/0",
        CHANNEL_LAYER="core",
        CHANNEL_LAYER_CAPACITY="500",
        CHANNEL_LAYER_EXPIRY="30",
    )
    assert "channels_redis.core.RedisChannelLayer" in core
    assert "'capacity': 500, 'expiry': 30" in core


@pytest.mark.slow
def test_postgresql_gets_a_pool_and_no_persistent_connections(tmp_path):
    url = "postgres://u@db.example:5432/offers"
    assert read_settings(tmp_path, "DATABASES['default']['OPTIONS']", DATABASE_URL=url) == [
        "{'pool': {'min_size': 1, 'max_size': 4, 'timeout': 5, 'reconnect_timeout': 2}}"
    ]
    unpooled = read_settings(
        tmp_path,
        "DATABASES['default']['OPTIONS']",
        "DATABASES['default']['CONN_MAX_AGE']",
        DATABASE_URL=url,
        DATABASE_POOL_SIZE="0",
        DATABASE_CONN_MAX_AGE="60",
    )
    assert unpooled == ["{}", "60"]
    both = manage(
        "check",
        env=project_env(DATABASE_URL=url, DATABASE_CONN_MAX_AGE="60", DATABASE_POOL_SIZE="4"),
    )
    assert both.returncode != 0
    assert "DATABASE_CONN_MAX_AGE must be 0 with the PostgreSQL pool" in both.stderr
