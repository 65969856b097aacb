"""Embedded mode under faults, for real: one `serve`, its journal, and a database that goes away.

Every decision is in the journal before its offer is sent, every mark and purchase before its
ack; whatever happens to the database or to the process, what a shopper saw or was told is in
the record in the end, once, and `manage.py reconcile` finds it whole.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from streaming.journal import FileJournal, read_directory
from streaming.policy import Outcome
from streaming.records import DecisionMade, MarkMade, OfferMade
from tests.faults.conftest import PrivatePostgres, wait_for
from tests.faults.shoppers import Cart, Recorded, failures, pause_carts, read_record, reconcile
from tests.subprocesses import GENEROUS_RULES, SMALL_MODEL, Server, manage, project_env

pytestmark = pytest.mark.e2e

PAUSE = "1"


DEMO_MODELS = ("offers.site", "offers.product", "offers.offerrule", "offers.scoringmodel")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """The demo shop prepared once: its env, and its data as a fixture file for other
    databases. Each test gets a copy of its own (`shop_env`, `postgres_env`)."""
    tmp = tmp_path_factory.mktemp("demo")
    env = project_env(
        DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
        LIVEOFFERS_TEST_DIR=str(tmp),
        PAUSE_SECONDS=PAUSE,
        HOLDOUT_PERCENT="0",
        RATE_BURST="100000",
        # Every shopper here comes from 127.0.0.1: no per-client limit may stand in the way.
        MAX_SOCKETS_PER_CLIENT="100000",
        CLIENT_RATE_EVENTS_PER_SECOND="100000",
        CLIENT_RATE_BURST="100000",
    )
    data = tmp / "demo.json"
    for command in (
        ["migrate", "--noinput"],
        ["shell", "-v", "0", "-c", SMALL_MODEL],
        ["bootstrap_demo"],
        ["shell", "-v", "0", "-c", GENEROUS_RULES],
        ["dumpdata", *DEMO_MODELS, "--output", str(data)],
    ):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    return env, data


def shop_env(demo: tuple[dict[str, str], Path], tmp: Path) -> dict[str, str]:
    """A copy of the demo shop's SQLite database in `tmp`, the journal beside it."""
    env, data = demo
    with (
        closing(sqlite3.connect(data.parent / "db.sqlite3")) as source,
        closing(sqlite3.connect(tmp / "db.sqlite3")) as copy,
    ):
        source.backup(copy)
    return {
        **env,
        "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
        "LIVEOFFERS_TEST_DIR": str(tmp),
        "RECORD_JOURNAL": str(tmp / "journal"),
    }


def postgres_env(
    demo: tuple[dict[str, str], Path], tmp: Path, postgres: PrivatePostgres, **settings: str
) -> dict[str, str]:
    """The demo shop on the test's own PostgreSQL, the journal in `tmp`."""
    env = {
        **demo[0],
        "DATABASE_URL": postgres.url,
        "LIVEOFFERS_TEST_DIR": str(tmp),
        "RECORD_JOURNAL": str(tmp / "journal"),
        **settings,
    }
    for command in (["migrate", "--noinput"], ["loaddata", str(demo[1])]):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    return env


def warm_up(server: Server) -> list[Cart]:
    """A first cart, paused until its offer: the server has its rules and model loaded (and
    the site cached, for a few seconds) before the database goes away."""
    first = pause_carts(server.ws_url, 1, first=10_000)
    offered(first)
    return first


def offered(carts: list[Cart]) -> dict[str, Cart]:
    """The carts by the code of the offer each received; every cart got one, each its own."""
    assert failures(carts) == []
    by_code = {cart.code: cart for cart in carts if cart.code}
    assert len(by_code) == len(carts), "a cart without an offer, or two with the same code"
    return by_code


def holding(
    env: dict[str, str],
    carts: list[Cart],
    *,
    timeout: float,
    what: str,
    column: str = "",
    converted: bool = False,
) -> Recorded:
    """The record, once every cart's offer is in it (and marked `column`, when given, and its
    decision converted, when asked)."""

    def whole() -> Recorded | None:
        record = read_record(env)
        for cart in carts:
            offer = record.offers.get(cart.code or "")
            if offer is None or (column and not offer[column]):
                return None
        if converted and not all(d["converted"] for d in record.decisions.values()):
            return None
        return record

    found: Recorded = wait_for(whole, timeout, what, every=0.5)
    return found


def waiting(directory: Path, kind: type) -> set[str]:
    """The sessions whose records of `kind` wait in a journal directory."""
    return {
        entry.record.session_id
        for entry in read_directory(directory)
        if isinstance(entry.record, kind) and isinstance(entry.record, DecisionMade | MarkMade)
    }


def test_three_hundred_carts_that_buy_as_their_offer_arrives_are_all_converted(demo, tmp_path):
    env = shop_env(demo, tmp_path)
    with Server(env) as server:
        carts = pause_carts(server.ws_url, 300, then=("offer_shown", "purchase"))
        by_code = offered(carts)
        record = holding(
            env,
            carts,
            timeout=30,
            what="300 offers, all shown and converted, in the record",
            column="shown",
            converted=True,
        )
        assert len(record.decisions) == 300
        assert {d["code"] for d in record.decisions.values()} == set(by_code)
        assert all(d["converted"] for d in record.decisions.values())
        assert all(record.offers[code]["shown"] for code in by_code)
        assert sorted(record.sessions_decided.values()) == [1] * 300
        assert record.dead == []
        reconcile(env)


# How long PostgreSQL stays away: well past the recorder's and the pool's retry pace.
OUTAGE = 8.0


@pytest.mark.services
def test_offers_made_while_postgresql_is_down_for_8_s_are_recorded_once_it_is_back(
    demo, tmp_path, private_postgres
):
    env = postgres_env(demo, tmp_path, private_postgres)
    with Server(env) as server:
        first = warm_up(server)
        private_postgres.stop()
        down = time.monotonic()
        try:
            # Offers come while PostgreSQL is down (the steps that wait on the database run
            # beside the pauses), and PostgreSQL stays down at least 8 s: the recorder's retries
            # (every second at most) and the pool's have long reached their slowest pace.
            carts = pause_carts(server.ws_url, 200, within=45)
            by_code = offered(carts)
            # Nothing could be written: every decision waits in the journal.
            sessions = {cart.session for cart in carts}
            assert sessions <= waiting(tmp_path / "journal", DecisionMade)
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
        finally:
            private_postgres.start()
        back = time.monotonic()
        record = holding(env, carts, timeout=30, what="the 200 offers, once PostgreSQL is back")
        print(f"all 200 recorded within {time.monotonic() - back:.1f} s of PostgreSQL being back")
        assert len(record.decisions) == 1 + 200
        assert sorted(record.sessions_decided.values()) == [1] * (1 + 200)
        assert {d["code"] for d in record.decisions.values()} == {first[0].code, *by_code}
        for code, cart in by_code.items():
            assert record.offers[code]["public_id"] == cart.offer_id
            assert record.offers[code]["session"] == cart.session
        assert record.dead == []
        reconcile(env)


@pytest.mark.services
def test_a_server_killed_after_its_offers_reached_browsers_records_them_on_restart(
    demo, tmp_path, private_postgres
):
    # Without the pool a refused connection fails at once, instead of after the pool's 5-s
    # timeout: the outage here only keeps anything from being written before the kill.
    env = postgres_env(demo, tmp_path, private_postgres, DATABASE_POOL_SIZE="0")
    server = Server(env)
    try:
        first = warm_up(server)
        # The database is away: nothing of what follows can be written before the kill.
        private_postgres.stop()
        carts = pause_carts(server.ws_url, 100, then=("offer_shown",), within=45)
        by_code = offered(carts)
        assert all("offer_shown" in cart.acked for cart in carts)
    finally:
        server.stop(signal.SIGKILL)
        private_postgres.start()
    assert server.process.returncode == -signal.SIGKILL
    sessions = {cart.session for cart in carts}
    assert sessions <= waiting(tmp_path / "journal", DecisionMade)
    assert sessions <= waiting(tmp_path / "journal", MarkMade)
    with Server(env):
        record = holding(
            env,
            carts,
            timeout=30,
            what="the killed server's offers, shown, after a restart",
            column="shown",
        )
        assert len(record.decisions) == 1 + 100
        assert sorted(record.sessions_decided.values()) == [1] * (1 + 100)
        assert {d["code"] for d in record.decisions.values()} == {first[0].code, *by_code}
        for code, cart in by_code.items():
            assert record.offers[code]["public_id"] == cart.offer_id
        reconcile(env)


def made_decision(*, site: str = "demo", code: str = "") -> DecisionMade:
    """A decision with an offer, as the decider journals it (with a fresh pause and offer id)."""
    now = time.time()
    session = f"poison-{uuid.uuid4().hex[:12]}"
    return DecisionMade(
        session_id=session,
        site=site,
        pause_key=f"{session}:1",
        deadline=now - 0.1,
        at=now,
        outcome=Outcome.OFFER,
        risk=0.5,
        shadow_risk=None,
        model="",
        shadow_model="",
        features={},
        cart_value=100.0,
        offer=OfferMade(
            offer_id=f"of-{uuid.uuid4().hex[:16]}",
            code=code or f"SAVE10-{uuid.uuid4().hex[:10].upper()}",
            rule_id=None,
            title="10% off",
            message="Just for you",
            discount_percent=10,
            created_at=now,
            expires_at=now + 3600,
        ),
    )


def dead_decisions(server: Server) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^liveoffers_records_dead_total\{kind="decision"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_poisoned_record_is_set_aside_and_every_other_one_is_written(demo, tmp_path):
    env = shop_env(demo, tmp_path)
    with Server(env) as server:
        (first,) = warm_up(server)
        holding(env, [first], timeout=20, what="the first offer in the record")
    nowhere = made_decision(site="no-such-shop")
    colliding = made_decision(code=first.code or "")
    good = [made_decision() for _ in range(5)]
    seen = [
        MarkMade(d.session_id, d.offer.offer_id if d.offer else None, "offer_shown", time.time())
        for d in good
    ]
    journal = FileJournal(tmp_path / "journal")
    try:
        asyncio.run(journal.append([nowhere, good[0], colliding, *good[1:], *seen]))
    finally:
        journal.close()
    with Server(env) as server:
        carts = pause_carts(server.ws_url, 20, then=("offer_shown",))
        offered(carts)
        record = holding(
            env, carts, timeout=30, what="the 20 live offers, shown, in the record", column="shown"
        )
        for d in good:
            assert d.offer is not None
            assert record.offers[d.offer.code]["shown"], d
            assert record.decisions[d.pause_key]["code"] == d.offer.code
        assert nowhere.pause_key not in record.decisions
        assert colliding.pause_key not in record.decisions
        assert len(record.decisions) == 1 + 5 + 20
        assert sorted(d["pause_key"] for d in record.dead) == sorted(
            [nowhere.pause_key, colliding.pause_key]
        )
        assert {d["kind"] for d in record.dead} == {"decision"}
        assert dead_decisions(server) >= 2
        said = reconcile(env)
        assert "2 set aside" in said, said


def test_sigterm_writes_every_acknowledged_acceptance_before_the_server_exits(demo, tmp_path):
    env = shop_env(demo, tmp_path)
    journal = tmp_path / "journal"
    server = Server(env)
    try:
        carts = pause_carts(server.ws_url, 50, then=("offer_accepted",))
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.output()
    by_code = offered(carts)
    assert all("offer_accepted" in cart.acked for cart in carts)
    assert read_directory(journal) == [], "the journal was not drained at shutdown"
    record = read_record(env)
    assert len(record.decisions) == 50
    for code, cart in by_code.items():
        assert record.offers[code]["accepted"], (code, cart)
    accepted = {
        (m["session"], m["offer_id"]) for m in record.marks if m["kind"] == "offer_accepted"
    }
    assert accepted == {(cart.session, cart.offer_id) for cart in carts}
    assert all(m["applied"] for m in record.marks)
    reconcile(env)
