"""Faults in Redis mode, with real processes: front ends and workers killed at the worst moment,
PostgreSQL away while carts pause, budgets spent by several workers at once. Whatever happens,
every code a shopper received ends up in the database, every acknowledged purchase is applied,
each pause is decided once, and `manage.py reconcile` finds the record whole."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import websockets

from streaming.budget import day_of
from streaming.redis_client import Shards, connect_sync
from tests.conftest import service_missing
from tests.factories import track
from tests.faults.conftest import PrivatePostgres, wait_for
from tests.redis_servers import OwnRedis, RedisServer, answers
from tests.subprocesses import Command, Server, Worker, manage, prepared_env, project_env

pytestmark = [pytest.mark.e2e, pytest.mark.services]

PAUSE = "1"
LEASE = "2"  # CLAIM_LEASE_SECONDS, where a killed worker's pauses matter
TAKEOVER = 30.0  # a killed recorder's entries wait 1.5 s idle; generous, on a busy machine


class Shopper:
    """One shop page's socket: a reader collects offers and acks while the test sends."""

    def __init__(self, ws: websockets.ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.session: str = welcome["session"]
        self.offers: list[dict[str, Any]] = []
        self.offered = asyncio.Event()
        self.offered_at = 0.0  # time.monotonic() of the first offer
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # acks and errors
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def arrive(cls, url: str) -> Shopper:
        ws = await websockets.connect(f"{url}/ws/collect/?site=demo", open_timeout=30)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert welcome["type"] == "welcome", welcome
        return cls(ws, welcome)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                frame = json.loads(message)
                if frame["type"] == "offer":
                    self.offers.append(frame)
                    if not self.offered.is_set():
                        self.offered_at = time.monotonic()
                        self.offered.set()
                else:
                    self.replies.put_nowait(frame)
        except websockets.ConnectionClosed:
            pass  # its server was killed: what it acknowledged is what counts

    async def send(self, *events: dict[str, Any]) -> None:
        """Send one frame (a batch if more than one event) and wait for its ack."""
        frame = (
            events[0]
            if len(events) == 1
            else {
                "type": "batch",
                "events": [{k: v for k, v in e.items() if k != "type"} for e in events],
            }
        )
        await self.ws.send(json.dumps(frame))
        reply = await asyncio.wait_for(self.replies.get(), 30)
        assert reply == {"type": "ack", "ids": [event["id"] for event in events]}, reply

    async def fill_cart(self, i: int) -> None:
        await self.send(track(f"add-{i}", "add_to_cart", product_id=f"sku-{i}", price=100.0))

    async def leave(self) -> None:
        await self.ws.close()
        await self.reader


async def arrive(urls: list[str], count: int) -> list[Shopper]:
    """`count` shoppers, spread over the front ends' socket urls in turn. One to each front end
    first: it reads the site from the database once, not once for each of a crowd (a handshake
    not answered within 5 s is refused by daphne)."""
    first = [await Shopper.arrive(url) for url in urls[:count]]
    rest = await asyncio.gather(
        *(Shopper.arrive(urls[i % len(urls)]) for i in range(len(first), count))
    )
    return [*first, *rest]


async def fill_carts(shoppers: list[Shopper]) -> None:
    await asyncio.gather(*(shopper.fill_cart(i) for i, shopper in enumerate(shoppers)))


async def all_offered(shoppers: list[Shopper], within: float) -> None:
    await asyncio.wait_for(asyncio.gather(*(s.offered.wait() for s in shoppers)), within)


async def leave(shoppers: list[Shopper]) -> None:
    await asyncio.gather(*(shopper.leave() for shopper in shoppers))


def sql(database_url: str, query: str) -> list[list[str]]:
    """Rows of a query, straight from PostgreSQL (no Django start-up for each look)."""
    result = subprocess.run(
        ["psql", database_url, "-XAtq", "-F", "\t", "-c", query],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def count(database_url: str, query: str) -> int:
    return int(sql(database_url, query)[0][0])


def decided(database_url: str) -> int:
    return count(database_url, "SELECT count(*) FROM offers_decision")


def pauses_decided(database_url: str) -> int:
    return count(database_url, "SELECT count(DISTINCT pause_key) FROM offers_decision")


def offer_codes(database_url: str) -> Counter[str]:
    return Counter(code for (code,) in sql(database_url, "SELECT code FROM offers_offer"))


def received(shoppers: list[Shopper]) -> Counter[str]:
    return Counter(offer["code"] for shopper in shoppers for offer in shopper.offers)


def assert_reconciled(env: dict[str, str]) -> None:
    result = manage("reconcile", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


MACHINE_POSTGRES = "postgres://postgres@127.0.0.1:5432"


def machine_psql(command: str) -> None:
    subprocess.run(
        ["psql", f"{MACHINE_POSTGRES}/postgres", "-Xq", "-c", command],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a database migrated and loaded with the demo shop and its generous rules, once
    for the module (loading the demo trains a model: half a minute); each test gets a copy."""
    if not answers(5432):
        service_missing("PostgreSQL at 127.0.0.1:5432")
    name = f"liveoffers_faults_{uuid.uuid4().hex[:8]}"
    machine_psql(f"CREATE DATABASE {name}")
    try:
        prepared_env(tmp_path_factory.mktemp("template"), DATABASE_URL=f"{MACHINE_POSTGRES}/{name}")
        yield name
    finally:
        machine_psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def machine_database(template: str) -> Iterator[str]:
    """A copy of the template on the machine's PostgreSQL."""
    name = f"liveoffers_faults_{uuid.uuid4().hex[:8]}"
    machine_psql(f"CREATE DATABASE {name} TEMPLATE {template}")
    yield f"{MACHINE_POSTGRES}/{name}"
    machine_psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def private_database(template: str, private_postgres: PrivatePostgres) -> PrivatePostgres:
    """A PostgreSQL of the test's own, to stop and start, holding a copy of the template."""
    dump = subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", f"{MACHINE_POSTGRES}/{template}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        ["psql", private_postgres.url, "-Xq", "-v", "ON_ERROR_STOP=1"],
        input=dump.stdout,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return private_postgres


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """One Redis of the test's own (the tests of the database's outage)."""
    server = RedisServer(tmp_path)
    yield server
    server.kill()


def stream_report(url: str, consumer_pid: int | None = None) -> str:
    """What the record streams hold (and what a process's recorder took), for a failing run."""
    client, shards = connect_sync(url), Shards.of_url(url)
    try:
        waiting = sum(client.xlen(shards.records(shard)) for shard in shards)
        held = 0
        for shard in shards:
            consumers = client.xpending(shards.records(shard), "recorders")["consumers"]
            held += sum(
                c["pending"]
                for c in consumers
                if consumer_pid is None or f"-{consumer_pid}-" in c["name"].decode()
            )
    finally:
        client.close()
    return f"{waiting} records in the streams, {held} taken and not written"


def shop_env(tmp_path: Path, database_url: str, redis_url: str, **settings: str) -> dict[str, str]:
    """What `prepared_env` gives (the database already prepared), in Redis mode."""
    return project_env(
        **{
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "LIVEOFFERS_TEST_DIR": str(tmp_path),
            "HOLDOUT_PERCENT": "0",
            "RATE_BURST": "100000",
            # Every shopper of a test comes from 127.0.0.1: one client, as far as limits go.
            "MAX_SOCKETS_PER_CLIENT": "100000",
            "CLIENT_RATE_EVENTS_PER_SECOND": "100000",
            "CLIENT_RATE_BURST": "100000",
            "PAUSE_SECONDS": PAUSE,
            **settings,
        }
    )


class Processes:
    """The front ends and workers a test starts, side by side; all stopped at the end."""

    def __init__(self) -> None:
        self.started: list[Command] = []

    def start(
        self,
        env: dict[str, str],
        *,
        servers: Sequence[Sequence[str]] = (),
        workers: Sequence[str] = (),
    ) -> tuple[list[Server], list[Worker]]:
        """Front ends (`serve --no-worker` and each one's extra arguments) and workers (by
        name), each once it answers, workers once they have read their model and rules."""
        with ThreadPoolExecutor(max_workers=len(servers) + len(workers)) as pool:
            fronts = [pool.submit(Server, env, "--no-worker", *extra) for extra in servers]
            deciders = [pool.submit(scoring_worker, env, name) for name in workers]
        futures: list[Future[Any]] = [*fronts, *deciders]
        self.started += [f.result() for f in futures if f.exception() is None]
        for future in futures:
            future.result()  # the first that failed, raised
        return [f.result() for f in fronts], [f.result() for f in deciders]

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(self.started))) as pool:
            list(pool.map(lambda command: command.stop(), self.started))
        for command in self.started:
            # Shown when the test fails.
            print(f"----- {command.log_path.name} (exit {command.process.returncode})")
            print("\n".join(command.output().splitlines()[-40:]))


def scoring_worker(env: dict[str, str], name: str) -> Worker:
    """A worker, once it has its model and rules (read from the database on its first tick): a
    worker that never read them decides nothing while PostgreSQL is away."""
    worker = Worker(env, name)
    wait_for(lambda: "now scoring with" in worker.output(), 30, f"worker {name} to load its model")
    time.sleep(0.5)  # the rules are read on the same first tick, beside the model
    return worker


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    yield started
    started.stop()


def test_two_front_ends_and_two_workers_never_spend_a_daily_budget_twice(
    tmp_path: Path, machine_database: str, own_redis: OwnRedis, processes: Processes
):
    redis_server = own_redis
    database = machine_database
    budget = 50
    rules = [
        rule
        for (rule,) in sql(
            database, f"UPDATE offers_offerrule SET daily_budget = {budget} RETURNING id"
        )
    ]
    assert rules
    env = shop_env(tmp_path, database, redis_server.url, HOLDOUT_PERCENT="20")
    fronts, _ = processes.start(env, servers=[(), ("--server", "daphne")], workers=["a", "b"])
    carts = 200  # twice what the rules' budgets hold together

    async def scenario() -> list[Shopper]:
        shoppers = await arrive([front.ws_url for front in fronts], carts)
        await fill_carts(shoppers)
        await asyncio.to_thread(
            wait_for, lambda: decided(database) >= carts, 40, "every paused cart decided"
        )
        await asyncio.sleep(1)  # an offer is recorded before it is sent: the last frames
        await leave(shoppers)
        return shoppers

    shoppers = asyncio.run(scenario())
    spent_in_redis = connect_sync(redis_server.url).hgetall(f"lo:budget:{day_of(time.time())}")
    outcomes = {
        (rule, outcome): int(n)
        for rule, outcome, n in sql(
            database,
            "SELECT coalesce(rule_id::text, '-'), outcome, count(*) FROM offers_decision "
            "GROUP BY 1, 2",
        )
    }
    print("decisions by rule and outcome:", outcomes, "spent in Redis:", spent_in_redis)
    assert decided(database) == pauses_decided(database) == carts
    for rule in rules:
        spent = outcomes.get((rule, "offer"), 0) + outcomes.get((rule, "holdout"), 0)
        # Demand is twice the budgets: each is spent to the last, never past it.
        assert int(spent_in_redis[rule.encode()]) == budget, spent_in_redis
        assert spent == budget, (rule, outcomes)
    assert sum(n for (_, outcome), n in outcomes.items() if outcome == "holdout") > 0
    # What shoppers received is what the record holds: a frame an offer decision, no more.
    assert all(len(shopper.offers) <= 1 for shopper in shoppers)
    offers_made = sum(n for (_, outcome), n in outcomes.items() if outcome == "offer")
    assert sum(len(shopper.offers) for shopper in shoppers) == offers_made
    assert received(shoppers) == offer_codes(database)
    assert_reconciled(env)


def test_purchases_a_killed_front_end_acknowledged_are_applied_by_the_others(
    tmp_path: Path, machine_database: str, own_redis: OwnRedis, processes: Processes
):
    redis_server = own_redis
    database = machine_database
    env = shop_env(tmp_path, database, redis_server.url, CLAIM_LEASE_SECONDS=LEASE)
    (front_a, _), _ = processes.start(env, servers=[(), ()], workers=["w"])
    carts = 100

    async def scenario() -> list[Shopper]:
        shoppers = await arrive([front_a.ws_url], carts)
        await fill_carts(shoppers)
        await all_offered(shoppers, 30)
        await asyncio.to_thread(
            wait_for, lambda: decided(database) >= carts, 30, "the offers' decisions recorded"
        )
        # Each shopper takes its offer and buys with it, through front end A.
        await asyncio.gather(
            *(
                shopper.send(*take_and_buy(i, shopper.offers[0]))
                for i, shopper in enumerate(shoppers)
            )
        )
        await asyncio.sleep(0.05)
        front_a.stop(signal.SIGKILL)
        await leave(shoppers)
        return shoppers

    shoppers = asyncio.run(scenario())
    assert front_a.process.returncode == -signal.SIGKILL
    # A recorder's consumer name holds its pid: what A had taken and not written waits for
    # another recorder to take it over (when the kill came before A's recorder read the stream,
    # the others read the entries as new).
    print("after the kill:", stream_report(redis_server.url, front_a.process.pid), "by A")
    sessions = ", ".join(f"'{shopper.session}'" for shopper in shoppers)
    bought = (
        "SELECT count(*) FROM offers_decision d JOIN offers_offer o ON o.decision_id = d.id "
        f"WHERE d.session IN ({sessions}) AND d.converted_at IS NOT NULL "
        "AND o.shown_at IS NOT NULL AND o.accepted_at IS NOT NULL"
    )
    wait_for(lambda: count(database, bought) == carts, TAKEOVER, "every acknowledged purchase")
    assert decided(database) == pauses_decided(database) == carts
    assert received(shoppers) == offer_codes(database)
    assert_reconciled(env)


def take_and_buy(i: int, offer: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        track(f"seen-{i}", "offer_shown", offer_id=offer["offer_id"]),
        track(f"take-{i}", "offer_accepted", offer_id=offer["offer_id"]),
        track(f"buy-{i}", "purchase", order_id=f"order-{i}", total=90.0, code=offer["code"]),
    ]


def test_offers_a_killed_worker_sent_while_the_database_was_away_are_all_recorded(
    tmp_path: Path,
    private_database: PrivatePostgres,
    redis_server: RedisServer,
    processes: Processes,
):
    # (one Redis: a worker killed on a cluster is tests/e2e/test_redis_mode.py's)
    postgres, database = private_database, private_database.url
    env = shop_env(tmp_path, database, redis_server.url, CLAIM_LEASE_SECONDS=LEASE)
    (front,), (first,) = processes.start(env, servers=[()], workers=["w1"])
    carts = 100

    async def scenario() -> list[Shopper]:
        # Connected first: a front end reads the site from the database (then caches it).
        shoppers = await arrive([front.ws_url], carts)
        await asyncio.to_thread(postgres.stop)
        await fill_carts(shoppers)
        # Sent, and nothing written: the worker dies with all its records unwritten.
        await all_offered(shoppers, 45)
        first.stop(signal.SIGKILL)
        print("at the kill:", stream_report(redis_server.url))
        await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(processes.start, env, workers=["w2"])
        await asyncio.to_thread(
            wait_for,
            lambda: decided(database) >= carts,
            TAKEOVER,
            "every decision recorded",
        )
        # Longer than a lease: a pause of the dead worker decided again would show by now.
        await asyncio.sleep(float(LEASE) + 1)
        await leave(shoppers)
        return shoppers

    shoppers = asyncio.run(scenario())
    assert first.process.returncode == -signal.SIGKILL
    again = [shopper.offers for shopper in shoppers if len(shopper.offers) != 1]
    assert again == []
    assert received(shoppers) == offer_codes(database)
    assert decided(database) == pauses_decided(database) == carts
    assert_reconciled(env)


def test_carts_pausing_while_the_database_is_away_get_offers_recorded_once_it_is_back(
    tmp_path: Path,
    private_database: PrivatePostgres,
    redis_server: RedisServer,
    processes: Processes,
):
    postgres, database = private_database, private_database.url
    env = shop_env(tmp_path, database, redis_server.url)
    (front,), _ = processes.start(env, servers=[()], workers=["w"])
    carts = 200
    outage = 8.0  # well past the recorder's and the pool's retry pace (1 to 2 s)

    async def scenario() -> tuple[list[Shopper], float, float]:
        shoppers = await arrive([front.ws_url], carts)
        await asyncio.to_thread(postgres.stop)
        back_at = time.monotonic() + outage
        await fill_carts(shoppers)
        filled_at = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await all_offered(shoppers, back_at - time.monotonic())
        await asyncio.sleep(max(0.0, back_at - time.monotonic()))
        await asyncio.to_thread(postgres.start)
        back_at = time.monotonic()
        await all_offered(shoppers, TAKEOVER)
        await asyncio.to_thread(
            wait_for,
            lambda: decided(database) >= carts,
            TAKEOVER,
            "every decision recorded once the database is back",
        )
        print(
            f"all {carts} recorded {time.monotonic() - back_at:.1f} s after the database was back"
        )
        await asyncio.sleep(1)
        await leave(shoppers)
        return shoppers, filled_at, back_at

    shoppers, filled_at, back_at = asyncio.run(scenario())
    assert all(len(shopper.offers) == 1 for shopper in shoppers)
    assert received(shoppers) == offer_codes(database)
    assert decided(database) == pauses_decided(database) == carts
    assert_reconciled(env)
    # The offers went out while the database was away, not once it was back.
    arrivals = sorted(round(shopper.offered_at - filled_at, 1) for shopper in shoppers)
    late = [shopper for shopper in shoppers if shopper.offered_at >= back_at]
    print(f"database back {back_at - filled_at:.1f} s after the fill; offers at", arrivals)
    assert late == [], (
        f"{len(late)} of {carts} offers came only once the database was back, "
        f"{back_at - filled_at:.1f} s after the carts were filled; seconds from the fill to each "
        f"offer: {arrivals[:: max(1, carts // 20)]}"
    )
