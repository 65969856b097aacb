from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import envbool, envfloat, envint, envlist
from tests.subprocesses import manage, project_env


def test_typed_helpers_read_good_values(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", " 42 ")
    monkeypatch.setenv("X_FLOAT", "2.5")
    monkeypatch.setenv("X_LIST", "a.example, b.example,")
    assert envbool("X_BOOL", False) is True
    assert envint("X_INT", 1, minimum=1) == 42
    assert envfloat("X_FLOAT", 1.0) == 2.5
    assert envlist("X_LIST", []) == ["a.example", "b.example"]
    assert envint("X_UNSET", 7) == 7


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
    ],
)
def test_typed_helpers_refuse_bad_values_clearly(monkeypatch, value, reader, message):
    monkeypatch.setenv("X", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        reader()


def test_a_bad_setting_stops_the_server_with_a_clear_message(tmp_path):
    result = manage(
        "check", env=project_env(PAUSE_SECONDS="soon", DATABASE_URL=f"sqlite:///{tmp_path}/db")
    )
    assert result.returncode != 0
    assert "PAUSE_SECONDS must be a number; got 'soon'" in result.stderr


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


def test_production_refuses_the_development_secret_key(tmp_path):
    result = manage("check", env=project_env(DEBUG="0", DATABASE_URL=f"sqlite:///{tmp_path}/db"))
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG=0" in result.stderr


def test_without_redis_url_the_channel_layer_is_in_memory(settings):
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
