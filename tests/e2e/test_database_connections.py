"""PostgreSQL connections of a real front end (Redis mode) while sockets come and go.

The front end's consumers and recorder use the database from one thread, but each HTTP request
runs its ORM calls in a thread of its own: without the pool (config/settings.py), a request's
connection outlived it until the garbage collector found it, and the count grew with traffic.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import websockets

from tests.e2e.test_redis_mode import postgres_url  # noqa: F401  (a fixture)
from tests.factories import track
from tests.redis_servers import RedisServer
from tests.subprocesses import Server, Worker, prepared_env

pytestmark = [pytest.mark.e2e, pytest.mark.services]

FRONT_END = "liveoffers-front-end"
POOL_SIZE = 4
ROUNDS = (25, 50, 100)  # sockets a round, opened and closed
REQUESTS = 30  # HTTP requests a round, 10 at a time


def count(database: str, query: str) -> int:
    result = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-Atc", query],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout)


class ConnectionCount(threading.Thread):
    """Samples the front end's connections in pg_stat_activity every 50 ms."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.query = (
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND application_name = '{FRONT_END}'"
        )
        self.samples: list[int] = []
        self.done = threading.Event()

    def now(self) -> int:
        return count("postgres", self.query)

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.samples.append(self.now())

    def most(self) -> int:
        """The most seen since the last call."""
        seen, self.samples = self.samples, []
        return max(seen, default=0)


async def shopper(url: str, i: int, opening: asyncio.Semaphore) -> None:
    """Fills a cart, waits for its offer, and says it was shown and taken: the front end's
    recorder writes both to the offer's row."""
    async with opening, websockets.connect(f"{url}/ws/collect/?site=demo") as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps(track(f"add-{i}", "add_to_cart", product_id="sku-1", price=50)))
        while (frame := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "offer":
            assert frame["type"] == "ack", frame
        offer_id = frame["offer_id"]
        await ws.send(
            json.dumps(
                {
                    "type": "batch",
                    "events": [
                        {"id": f"s-{i}", "event": "offer_shown", "props": {"offer_id": offer_id}},
                        {
                            "id": f"a-{i}",
                            "event": "offer_accepted",
                            "props": {"offer_id": offer_id},
                        },
                    ],
                }
            )
        )
        assert json.loads(await ws.recv())["type"] == "ack"


def get(server: Server, path: str, cookie: str) -> int:
    request = urllib.request.Request(
        f"{server.url}{path}", headers={"Cookie": f"sessionid={cookie}"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        response.read()
        return int(response.status)


async def requests(server: Server, cookie: str) -> list[int]:
    """Staff API, admin and health checks: each request's ORM calls in a thread of its own."""
    paths = ["/api/decisions/?limit=50", "/admin/", "/healthz"]
    limit = asyncio.Semaphore(10)

    async def one(path: str) -> int:
        async with limit:
            return await asyncio.to_thread(get, server, path, cookie)

    return await asyncio.gather(*(one(paths[n % len(paths)]) for n in range(REQUESTS)))


async def one_round(server: Server, cookie: str, *, first: int, sockets: int) -> list[int]:
    opening = asyncio.Semaphore(30)
    shoppers = [shopper(server.ws_url, first + i, opening) for i in range(sockets)]
    statuses, _ = await asyncio.gather(requests(server, cookie), asyncio.gather(*shoppers))
    return statuses


def answered_offers(database: str, expected: int, timeout: float = 15) -> int:
    """Offers marked shown and accepted, once there are `expected` or the time is up: the
    front end's recorder writes an event once the worker has recorded its offer."""
    deadline = time.monotonic() + timeout
    while True:
        answered = count(
            database,
            "SELECT count(*) FROM offers_offer "
            "WHERE shown_at IS NOT NULL AND accepted_at IS NOT NULL",
        )
        if answered >= expected or time.monotonic() > deadline:
            return answered
        time.sleep(0.2)


def test_a_front_end_holds_a_few_connections_however_many_sockets_and_requests_come(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
):
    redis = RedisServer(tmp_path)
    env, cookie = prepared_env(
        tmp_path,
        DATABASE_URL=postgres_url,
        REDIS_URL=redis.url,
        PAUSE_SECONDS="1",
        OFFER_COOLDOWN_SECONDS="0",
        DATABASE_POOL_SIZE=str(POOL_SIZE),
    )
    front_env = env | {"DATABASE_URL": f"{postgres_url}?application_name={FRONT_END}"}
    server = Server(front_env, "--no-worker")
    worker = Worker(env, "decides")
    database = postgres_url.rsplit("/", 1)[1]
    counter = ConnectionCount(database)
    counter.start()
    most: list[int] = []
    after: list[int] = []
    statuses: list[int] = []
    try:
        for n, sockets in enumerate(ROUNDS):
            statuses += asyncio.run(
                one_round(server, cookie, first=sum(ROUNDS[:n]), sockets=sockets)
            )
            answered = answered_offers(database, sum(ROUNDS[: n + 1]))
            most.append(counter.most())
            after.append(counter.now())
    finally:
        counter.done.set()
        server.stop()
        worker.stop()
        redis.kill()
    assert statuses == [200] * REQUESTS * len(ROUNDS)
    assert answered == sum(ROUNDS)
    # Bounded by the pool in every round, and no more after 100 sockets than after 25.
    assert max(most) <= POOL_SIZE, most
    assert after[-1] <= after[0] <= POOL_SIZE, after
