"""The journal the record waits in: a file in embedded mode, a Redis stream in Redis mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streaming import journal as journal_module
from streaming.journal import Entry, FileJournal, RedisJournal, read_directory
from streaming.policy import Outcome
from streaming.records import (
    DecisionMade,
    MarkMade,
    ReasonsMade,
    Record,
    RecordError,
    decode,
    encode,
)
from tests.factories import T0
from tests.streaming.test_redis_store import _client, redis_url  # noqa: F401  # its fixture


def marks(n: int, start: int = 0) -> list[MarkMade]:
    return [MarkMade(f"s-{i}", f"o-{i}", "offer_shown", T0 + i) for i in range(start, start + n)]


def test_records_read_back_as_written_and_other_bytes_are_refused():
    mark = MarkMade("s-1", None, "purchase", T0)
    assert decode(encode(mark)) == mark
    for garbage in (b"", b"\x93\x01\x02\x03", encode(mark)[:-3], b"\x92\xa4evil\xc0"):
        with pytest.raises(RecordError):
            decode(garbage)


def test_a_decision_written_before_decisions_said_why_reads_back_without_a_why():
    import msgspec

    decision = DecisionMade(
        session_id="s-1",
        site="demo",
        pause_key="s-1:3",
        deadline=T0,
        at=T0,
        outcome=Outcome.NO_OFFER,
        risk=0.2,
        shadow_risk=None,
        model="cart-risk@1",
        shadow_model="",
        features={"cart_value": 20.0},
        cart_value=20.0,
        why="risk 0.20 below the rule's 0.60",
    )
    assert decode(encode(decision)) == decision
    # the fields as a journal written before `why` holds them
    fields = msgspec.to_builtins(decision)
    del fields["why"]
    old = decode(msgspec.msgpack.encode(("decision", fields)))
    assert isinstance(old, DecisionMade) and old.why == "" and old.pause_key == "s-1:3"


async def test_a_file_journal_replays_what_was_not_written_after_a_restart(tmp_path: Path):
    journal = FileJournal(tmp_path)
    await journal.append(marks(5))
    taken = await journal.take(3)
    assert [e.record for e in taken] == marks(3)
    await journal.done(taken)
    journal.close()  # the process dies here: two records were never written

    again = FileJournal(tmp_path)
    assert again.waiting() == 2
    assert [e.record for e in await again.take(10)] == marks(2, start=3)
    await again.append(marks(1, start=5))
    assert [e.record for e in await again.take(10)] == marks(3, start=3)
    assert len(read_directory(tmp_path)) == 3
    again.close()


async def test_a_record_cut_short_by_a_crash_is_dropped_and_the_file_goes_on(tmp_path: Path):
    journal = FileJournal(tmp_path)
    await journal.append(marks(2))
    journal.close()
    path = tmp_path / "records"
    path.write_bytes(path.read_bytes()[:-4])  # the last write never finished
    again = FileJournal(tmp_path)
    assert [e.record for e in await again.take(10)] == marks(1)
    await again.append(marks(1, start=7))
    again.close()
    assert [e.record for e in read_directory(tmp_path)] == [*marks(1), *marks(1, start=7)]


async def test_damaged_bytes_are_handed_out_to_be_set_aside(tmp_path: Path):
    journal = FileJournal(tmp_path)
    await journal.append(marks(1))
    journal.close()
    with (tmp_path / "records").open("ab") as f:
        f.write((3).to_bytes(4, "little") + b"\xc1\xc1\xc1")
    again = FileJournal(tmp_path)
    good, bad = await again.take(10)
    assert good.record == marks(1)[0]
    assert bad.record is None and bad.raw == b"\xc1\xc1\xc1" and bad.error
    again.close()


async def test_one_journal_directory_serves_one_process(tmp_path: Path):
    journal = FileJournal(tmp_path)
    with pytest.raises(RuntimeError, match="in use by another process"):
        FileJournal(tmp_path)
    journal.close()
    FileJournal(tmp_path).close()


async def test_a_written_file_journal_starts_again_from_empty(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 200)
    journal = FileJournal(tmp_path)
    await journal.append(marks(10))
    await journal.done(await journal.take(10))
    assert (tmp_path / "records").stat().st_size == 0
    await journal.append(marks(1, start=20))
    journal.close()
    assert [e.record for e in read_directory(tmp_path)] == marks(1, start=20)


# --- Redis ----------------------------------------------------------------------------------
def by_session(entries: list[Entry]) -> list[Record | None]:
    """On a cluster each shard has its stream: records keep their order within a session only."""
    return sorted((e.record for e in entries), key=lambda r: getattr(r, "session_id", ""))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:  # noqa: F811  # the fixture
    client = await _client(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.mark.services
async def test_the_stream_hands_each_record_to_one_recorder(client: aioredis.Redis):
    one = RedisJournal(client, consumer="one")
    two = RedisJournal(client, consumer="two")
    await one.append(marks(6))
    a, b = await one.take(4), await two.take(4)
    await one.done(a)
    # (on a cluster, what `one` read past 4 over its streams is its own, and comes first)
    c = await one.take(4)
    assert len(a) >= 4  # (4 from one Redis; up to a record a stream from a cluster's)
    assert by_session(a + b + c) == marks(6)  # each record to one recorder, once
    await one.refresh()
    assert one.waiting() == 6 - len(a)  # done is deleted: the streams hold only what waits


@pytest.mark.services
async def test_what_a_recorder_took_and_did_not_write_is_handed_out_again(
    client: aioredis.Redis,
):
    await RedisJournal(client).append([ReasonsMade("s-1:4", []), *marks(2)])
    mine = RedisJournal(client, consumer="mine", claim_idle=0.05)
    first = await mine.take(2)
    assert len(first) == 2
    assert [e.record for e in await mine.take(2)] == [e.record for e in first]  # not done: again
    # a recorder that was killed holding entries: another takes them over once they are idle
    other = RedisJournal(client, consumer="other", claim_idle=0.05)
    await asyncio.sleep(0.1)
    taken = await other.take(10)
    assert [e.record for e in taken] == [e.record for e in first]
    await other.done(taken)
    rest = [e.record for e in await other.take(10)]
    assert len(rest) == 1 and rest[0] not in [e.record for e in first]


@pytest.mark.services
async def test_a_redis_that_lost_the_group_is_given_it_again(client: aioredis.Redis):
    journal = RedisJournal(client)
    await journal.append(marks(1))
    assert len(await journal.take(5)) == 1
    await client.flushdb()  # Redis restarted without its data
    assert await journal.take(5) == []
    await journal.append(marks(1, start=3))
    assert [e.record for e in await journal.take(5)] == marks(1, start=3)
