"""The project against the real Redis and PostgreSQL of this machine (Redis mode's parts)."""

from __future__ import annotations

import socket
import subprocess
import uuid

import pytest

from tests.conftest import service_missing
from tests.subprocesses import manage, project_env

pytestmark = pytest.mark.services

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES = ("127.0.0.1", 5432)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    if not _answers("127.0.0.1", 6379):
        service_missing("Redis at 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
def postgres_url():
    if not _answers(*POSTGRES):
        service_missing("PostgreSQL at 127.0.0.1:5432")
    name = f"liveoffers_test_{uuid.uuid4().hex[:10]}"
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {name}"],
        check=True,
        capture_output=True,
    )
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-c",
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        ],
        check=False,
        capture_output=True,
    )


@pytest.mark.parametrize(
    ("chosen", "layer"),
    [
        (None, "channels_redis.pubsub.RedisPubSubChannelLayer"),
        ("core", "channels_redis.core.RedisChannelLayer"),
    ],
)
def test_redis_url_selects_a_redis_channel_layer_and_it_carries_messages(
    redis_url, tmp_path, chosen, layer
):
    code = (
        "import asyncio\n"
        "from django.conf import settings\n"
        "from channels.layers import get_channel_layer\n"
        "layer = get_channel_layer()\n"
        "print(type(layer).__module__ + '.' + type(layer).__name__)\n"
        "async def roundtrip():\n"
        "    name = await layer.new_channel()\n"
        "    await layer.group_add('g', name)\n"
        "    await layer.group_send('g', {'type': 'offer', 'code': 'SAVE10'})\n"
        "    print((await asyncio.wait_for(layer.receive(name), 5))['code'])\n"
        "    await layer.flush()\n"
        "asyncio.run(roundtrip())\n"
    )
    result = manage(
        "shell",
        "-v",
        "0",
        "-c",
        code,
        env=project_env(
            REDIS_URL=redis_url,
            DATABASE_URL=f"sqlite:///{tmp_path}/db",
            **({"CHANNEL_LAYER": chosen} if chosen else {}),
        ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [layer, "SAVE10"]


def test_migrations_and_the_demo_load_on_postgresql(postgres_url):
    env = project_env(DATABASE_URL=postgres_url)
    migrate = manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    for _ in range(2):  # idempotent
        demo = manage("bootstrap_demo", env=env)
        assert demo.returncode == 0, demo.stderr
    count = manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from offers.models import Product; print(Product.objects.count())",
        env=env,
    )
    assert count.stdout.strip() == "12"


HEALTH = (
    "from django.test import Client; r = Client(HTTP_HOST='localhost').get('/healthz'); "
    "print(r.status_code, r.json()['mode'], r.json()['redis'])"
)


def test_health_checks_redis_in_redis_mode(redis_url, tmp_path):
    env = project_env(REDIS_URL=redis_url, DATABASE_URL=f"sqlite:///{tmp_path}/db")
    result = manage("shell", "-v", "0", "-c", HEALTH, env=env)
    assert result.stdout.split() == ["200", "redis", "ok"], result.stderr


def test_health_answers_503_when_redis_is_down(tmp_path):
    env = project_env(REDIS_URL="redis://127.0.0.1:1/0", DATABASE_URL=f"sqlite:///{tmp_path}/db")
    result = manage("shell", "-v", "0", "-c", HEALTH, env=env)
    assert result.stdout.split() == ["503", "redis", "down"], result.stderr
