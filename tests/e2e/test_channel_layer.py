"""A real front end on the pub/sub channel layer when Redis goes away under its open sockets."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from benchmarks.layer import DEMO_SITE
from tests.redis_servers import RedisServer
from tests.subprocesses import Server, manage, project_env

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def metric(server: Server, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_an_idle_socket_is_closed_with_4503_when_the_layer_loses_redis_and_resumes_after(
    tmp_path: Path,
):
    redis = RedisServer(tmp_path)
    env = project_env(
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        LIVEOFFERS_TEST_DIR=str(tmp_path),
        REDIS_URL=redis.url,
        CHANNEL_LAYER="pubsub",
    )
    for command in (["migrate", "--noinput", "-v", "0"], ["shell", "-v", "0", "-c", DEMO_SITE]):
        assert manage(*command, env=env).returncode == 0
    server = Server(env, "--no-worker")

    async def idle_until_closed() -> tuple[str, int | None, float]:
        async with websockets.connect(f"{server.ws_url}/ws/collect/?site=demo") as ws:
            token = json.loads(await ws.recv())["token"]
            redis.kill()
            killed = time.monotonic()
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 10)
            return token, ws.close_code, time.monotonic() - killed

    async def resume(token: str) -> str:
        async with websockets.connect(f"{server.ws_url}/ws/collect/?site=demo&token={token}") as ws:
            return str(json.loads(await ws.recv())["type"])

    try:
        token, code, after = asyncio.run(idle_until_closed())
        failures = metric(server, "liveoffers_channel_layer_receive_failures_total")
        redis.start()
        welcome = asyncio.run(resume(token))
    finally:
        server.stop()
        redis.kill()
    assert code == 4503 and after < 3
    assert failures >= 1
    assert welcome == "welcome"
