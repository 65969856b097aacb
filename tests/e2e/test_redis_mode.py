"""Redis mode for real: front ends and workers in separate processes on a Redis of their own (one
Redis, and a Redis Cluster of three masters) and the machine's PostgreSQL. Any of them may die;
nothing acknowledged is lost, nothing is decided twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from streaming.redis_client import CLUSTER_SHARDS, Shards
from tests.conftest import service_missing
from tests.factories import track
from tests.redis_servers import LocalCluster, OwnRedis, RedisServer, answers
from tests.subprocesses import Server, Worker, free_port, manage, prepared_env

pytestmark = [pytest.mark.e2e, pytest.mark.services]

PAUSE = 2.0
LEASE = 2.0  # CLAIM_LEASE_SECONDS: how long a killed worker's pauses wait for the other


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if not answers(5432):
        service_missing("PostgreSQL at 127.0.0.1:5432")
    name = f"liveoffers_redis_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    subprocess.run(
        [*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False, capture_output=True
    )


async def shopper(
    url: str,
    i: int,
    offers: list[dict[str, Any]],
    acked: asyncio.Event,
    done: asyncio.Event,
    failures: list[BaseException],
) -> None:
    try:
        async with websockets.connect(f"{url}/ws/collect/?site=demo", open_timeout=30) as ws:
            json.loads(await asyncio.wait_for(ws.recv(), 30))
            await ws.send(
                json.dumps(track(f"add-{i}", "add_to_cart", product_id=f"sku-{i}", price=100.0))
            )
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "ack"
            acked.set()
            while not done.is_set():
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                except TimeoutError:
                    continue
                if frame["type"] == "offer":
                    offers.append(frame)
    except (OSError, TimeoutError, AssertionError, websockets.WebSocketException) as exc:
        failures.append(exc)
        acked.set()


def test_two_servers_two_workers_and_a_killed_worker_decide_each_cart_once(
    tmp_path: Path, postgres_url: str, redis_cluster: LocalCluster
):
    # On the cluster: on one Redis, tests/faults/test_redis.py kills a worker mid-burst.
    redis = OwnRedis(tmp_path, redis_cluster)
    env, cookie = prepared_env(
        tmp_path,
        DATABASE_URL=postgres_url,
        REDIS_URL=redis.url,
        PAUSE_SECONDS=str(PAUSE),
        CLAIM_LEASE_SECONDS=str(LEASE),
    )
    servers = [Server(env, "--no-worker"), Server(env, "--no-worker", "--server", "uvicorn")]
    metrics_port = free_port()
    workers = [Worker(env, "a"), Worker(env, "b", "--metrics-port", str(metrics_port))]
    carts = 200
    offers: list[list[dict[str, Any]]] = [[] for _ in range(carts)]
    failures: list[BaseException] = []
    stats: list[dict[str, Any]] = []

    async def scenario() -> None:
        done = asyncio.Event()
        watching = asyncio.create_task(dashboard(servers[0], cookie, stats, done))
        acks = [asyncio.Event() for _ in range(carts)]
        tasks = [
            asyncio.create_task(
                shopper(servers[i % 2].ws_url, i, offers[i], acks[i], done, failures)
            )
            for i in range(carts)
        ]
        await asyncio.gather(*(a.wait() for a in acks))
        # Kill one worker while the pauses fall due: whatever it had claimed, it never finishes.
        await asyncio.sleep(PAUSE - 0.05)
        workers[0].stop(signal.SIGKILL)
        await asyncio.sleep(LEASE + 3)  # the lease runs out; then the other worker decides
        done.set()
        await asyncio.gather(*tasks, watching)

    try:
        asyncio.run(scenario())
        counts = manage(
            "shell",
            "-v",
            "0",
            "-c",
            "from offers.models import Decision, Offer; "
            "print(Decision.objects.count(), Decision.objects.values('pause_key').distinct().count(), "
            "Offer.objects.count(), Decision.objects.filter(outcome='offer').count())",
            env=env,
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            survivor = response.read().decode()
        # The carts' keys spread over every master (16 shards, 3 masters).
        spread = redis_cluster.key_counts()
    finally:
        for server in servers:
            server.stop()
        for worker in workers:
            worker.stop()
        redis.kill()
    assert failures == []
    assert all(keys > 0 for keys in spread), spread
    # the survivor's own metrics: it decided pauses (how many depends on how many had fallen due
    # by the kill, on a loaded machine up to half of them or more)
    offers_made = re.search(
        r'^liveoffers_decisions_total\{outcome="offer"\} (\S+)$', survivor, re.M
    )
    assert offers_made is not None and float(offers_made.group(1)) > 0
    assert counts.stdout.split() == [str(carts)] * 4, counts.stderr
    for i, received in enumerate(offers):
        assert len({offer["offer_id"] for offer in received}) == 1, (i, received)
    assert workers[0].process.returncode == -signal.SIGKILL
    # The dashboard, on a front end, shows every process's counts, published by one worker at
    # a time: the survivor after the kill.
    # (A worker killed mid-second takes its last second of counts with it: the database is the
    # record, the dashboard's counts are for watching.)
    assert stats[-1]["events"] >= carts and stats[-1]["decisions"]["offer"] >= carts // 2
    rates = sum(frame["events_per_second"] for frame in stats[1:])
    assert rates == stats[-1]["events"] - stats[0]["events"], [
        (f["at"], f["events"], f["events_per_second"]) for f in stats
    ]
    seconds = stats[-1]["at"] - stats[0]["at"]
    assert len(stats) <= seconds + 2, "more than one publisher at a time"


async def dashboard(
    server: Server, cookie: str, stats: list[dict[str, Any]], done: asyncio.Event
) -> None:
    async with websockets.connect(
        f"{server.ws_url}/ws/dashboard/",
        origin=websockets.Origin(server.url),
        additional_headers={"Cookie": f"sessionid={cookie}"},
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "snapshot"
        while not done.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
            except TimeoutError:
                continue
            if frame["type"] == "stats":
                stats.append(frame)


async def five_adds(url: str) -> dict[str, Any]:
    """A shopper puts five products in the cart, each acknowledged; returns the welcome."""
    async with websockets.connect(f"{url}/ws/collect/?site=demo") as ws:
        welcome: dict[str, Any] = json.loads(await ws.recv())
        for i in range(5):
            await ws.send(
                json.dumps(track(f"e-{i}", "add_to_cart", product_id=f"sku-{i}", price=10.0))
            )
            assert json.loads(await ws.recv())["type"] == "ack"
        return welcome


async def close_code_of_a_new_socket(url: str) -> int | None:
    async with websockets.connect(f"{url}/ws/collect/?site=demo") as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
            await asyncio.wait_for(ws.recv(), 5)
        return None if ws.close_code is None else int(ws.close_code)


async def close_code_of_a_dashboard(server: Server, cookie: str) -> int | None:
    async with websockets.connect(
        f"{server.ws_url}/ws/dashboard/",
        origin=websockets.Origin(server.url),
        additional_headers={"Cookie": f"sessionid={cookie}"},
    ) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        return None if ws.close_code is None else int(ws.close_code)


async def come_back(url: str, token: str) -> list[str]:
    """The shopper's page reconnects (as the snippet does, again after a 4503) and re-sends
    an acknowledged id with a new one; returns the ids acknowledged."""
    for _ in range(10):
        try:
            return await resend(url, token)
        except websockets.ConnectionClosedError as closed:
            if closed.rcvd is None or closed.rcvd.code != 4503:
                raise
            await asyncio.sleep(0.5)
    return await resend(url, token)


async def resend(url: str, token: str) -> list[str]:
    async with websockets.connect(f"{url}/ws/collect/?site=demo&token={token}") as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        # Re-sent ids are known (applied once); a new one is applied.
        await ws.send(
            json.dumps(
                {
                    "type": "batch",
                    "events": [
                        {"id": "e-0", "event": "heartbeat"},
                        {"id": "e-new", "event": "heartbeat"},
                    ],
                }
            )
        )
        ids: list[str] = json.loads(await ws.recv())["ids"]
        return ids


def cart_of(env: dict[str, str], session: str) -> list[str]:
    """The session's cart value and adds, as Redis holds them."""
    state = manage(
        "shell",
        "-v",
        "0",
        "-c",
        "import asyncio; from offers.runtime import get_runtime; "
        f"s = asyncio.run(get_runtime().store.get('{session}')); "
        "print(s.cart_value, s.adds)",
        env=env,
    )
    assert state.returncode == 0, state.stderr
    return state.stdout.split()


def wait_for_health(server: Server, status: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while health(server) != status:
        assert time.monotonic() < deadline, f"/healthz did not turn {status}"
        time.sleep(0.2)


def test_a_redis_restart_loses_nothing_acknowledged_and_servers_recover_on_their_own(
    tmp_path: Path, postgres_url: str
):
    redis = RedisServer(tmp_path)
    env, cookie = prepared_env(
        tmp_path, DATABASE_URL=postgres_url, REDIS_URL=redis.url, PAUSE_SECONDS="60"
    )
    server = Server(env, "--no-worker")
    url = server.ws_url
    try:
        welcome = asyncio.run(five_adds(url))
        redis.kill()
        code = asyncio.run(close_code_of_a_new_socket(url))
        dashboard_code = asyncio.run(close_code_of_a_dashboard(server, cookie))
        health_down = health(server)
        redis.start()
        wait_for_health(server, 200)
        ids = asyncio.run(come_back(url, welcome["token"]))
        cart = cart_of(env, welcome["session"])
    finally:
        server.stop()
        redis.kill()
    assert code == dashboard_code == 4503 and health_down == 503
    assert ids == ["e-0", "e-new"]
    assert cart == ["50.0", "5"]


def test_a_cluster_master_restart_loses_nothing_acknowledged(
    tmp_path: Path, postgres_url: str, redis_cluster: LocalCluster
):
    """The master holding a shopper's shard is killed and started again: its append-only file
    has every event it acknowledged, and the front end finds it again on its own."""
    redis_cluster.flush()
    env, _ = prepared_env(
        tmp_path, DATABASE_URL=postgres_url, REDIS_URL=redis_cluster.url, PAUSE_SECONDS="60"
    )
    server = Server(env, "--no-worker")
    url = server.ws_url
    try:
        welcome = asyncio.run(five_adds(url))
        port = redis_cluster.port_of(Shards(count=CLUSTER_SHARDS).session(welcome["session"]))
        redis_cluster.kill(port)
        wait_for_health(server, 503)  # once the cluster sees the master gone
        redis_cluster.start(port)
        redis_cluster.wait_ok()
        wait_for_health(server, 200)
        ids = asyncio.run(come_back(url, welcome["token"]))
        cart = cart_of(env, welcome["session"])
    finally:
        server.stop()
    assert ids == ["e-0", "e-new"]
    assert cart == ["50.0", "5"]


def health(server: Server) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)


API_KEY = (
    "from offers.models import Site; from offers.services import api_key_create; "
    "print(api_key_create(site=Site.objects.get(key='demo'), name='checkout')[1])"
)


def redeem_status(server: Server, key: str) -> int:
    import urllib.error

    request = urllib.request.Request(
        f"{server.url}/api/redeem/",
        data=json.dumps({"code": "SAVE10-UNKNOWN", "order_id": "1", "total": 1.0}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)


def test_two_servers_share_a_keys_redeem_rate(tmp_path: Path):
    redis = RedisServer(tmp_path)
    env, _ = prepared_env(
        tmp_path, REDIS_URL=redis.url, REDEEM_BURST="3", REDEEM_RATE_PER_SECOND="0.001"
    )
    created = manage("shell", "-v", "0", "-c", API_KEY, env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    servers = [Server(env, "--no-worker") for _ in range(2)]
    try:
        # Each server alone would let 3 through: together they let 3 through in all.
        answered = [redeem_status(servers[n % 2], key) for n in range(6)]
    finally:
        for server in servers:
            server.stop()
        redis.kill()
    assert answered == [404, 404, 404, 429, 429, 429]
