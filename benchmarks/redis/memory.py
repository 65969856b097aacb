"""`bench redis`, memory: what Redis holds for N live sessions of a `RedisStore`, and for an
offer each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import redis.asyncio as aioredis

from benchmarks import BenchError
from benchmarks.memory import shopper_frames
from benchmarks.redis.figures import RedisMemory
from offers.tokens import new_session_id
from streaming.decider import offer_frame
from streaming.policy import new_offer_code, new_offer_id
from streaming.protocol import Event, decode_frame
from streaming.records import OfferMade
from streaming.redis_store import RedisStore

# Sessions filled at once for the memory figure: their calls go out pipelined.
FILL_AT_ONCE = 256


async def used_memory(client: aioredis.Redis) -> int:
    """INFO used_memory less the clients' buffers and the cached scripts: the data's share."""
    memory = await client.info("memory")
    return (
        int(memory["used_memory"])
        - int(memory["mem_clients_normal"])
        - int(memory.get("used_memory_scripts", 0))
    )


async def other_keys(client: aioredis.Redis) -> dict[str, int]:
    """Keys in the server's other databases: when they change, so does used_memory."""
    ours = f"db{client.connection_pool.connection_kwargs.get('db', 0)}"
    keyspace = await client.info("keyspace")
    return {db: int(about["keys"]) for db, about in keyspace.items() if db != ours}


async def memory_usage(client: aioredis.Redis, keys: Sequence[str | bytes]) -> int:
    """MEMORY USAGE of every key, summed; exact (SAMPLES 0) for the nested ones."""
    total = 0
    for start in range(0, len(keys), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 1000]:
                pipe.memory_usage(key, samples=0)
            total += sum(int(size or 0) for size in await pipe.execute())
    return total


async def fill_sessions(store: RedisStore, sessions: int) -> tuple[list[str], int]:
    """Apply a realistic visit to each of `sessions` new sessions, frame by frame, as a front
    end would; returns the session ids and the events applied."""
    runs: list[list[list[Event]]] = []
    for number in range(64):
        run = []
        for frame in shopper_frames(number):
            items = decode_frame(frame)
            events = [item for item in items if isinstance(item, Event)]
            if len(events) != len(items):
                raise BenchError(f"the benchmark's own frame is refused: {items}")
            run.append(events)
        runs.append(run)
    ids = [new_session_id() for _ in range(sessions)]
    start = time.time()

    async def visit(number: int) -> int:
        session_id, applied = ids[number], 0
        await store.open(session_id=session_id, site="demo", now=start)
        for step, events in enumerate(runs[number % len(runs)]):
            result = await store.apply(
                session_id=session_id, site="demo", events=events, now=start + step * 0.001
            )
            if result.errors:
                raise BenchError(f"the benchmark's own events are refused: {result.errors}")
            applied += len(result.acked)
        return applied

    applied = 0
    for first in range(0, sessions, FILL_AT_ONCE):
        done = await asyncio.gather(*map(visit, range(first, min(sessions, first + FILL_AT_ONCE))))
        applied += sum(done)
    return ids, applied


async def give_offers(store: RedisStore, ids: Sequence[str]) -> None:
    """An offer for each session, its frame as a worker makes it.

    One at a time, as a worker notes them: concurrent calls would each take a connection of
    redis-py's pool, and every connection holds memory of its own in Redis.
    """
    # The demo's rule with the longer text; imported here, as it needs Django's apps loaded.
    from offers.management.commands.bootstrap_demo import DEMO_RULES

    *_, discount, title, message = max(DEMO_RULES, key=lambda rule: len(rule[-1]))
    now = time.time()
    for session_id in ids:
        offer = OfferMade(
            offer_id=new_offer_id(),
            code=new_offer_code(discount),
            rule_id=1,
            title=title,
            message=message,
            discount_percent=discount,
            created_at=now,
            expires_at=now + 1800,
        )
        await store.note_offer(
            session_id,
            at=now,
            offer_id=offer.offer_id,
            frame=offer_frame(offer),
            expires_at=offer.expires_at,
        )


async def measure_redis_memory(url: str, sessions: int) -> RedisMemory:
    client = aioredis.Redis.from_url(url)
    store = RedisStore(client)  # the default 30-minute idle time and 30 s pause
    try:
        await client.flushdb()
        others = await other_keys(client)
        before = await used_memory(client)
        ids, applied = await fill_sessions(store, sessions)
        after = await used_memory(client)
        states = [store.session_key(session_id) for session_id in ids]
        # The sorted sets every session has an entry in (streaming/redis_store.py's layout).
        keys = store.shards
        shared = {"pauses": keys.pauses(0), "live": keys.live(0), "carts": keys.carts(0)}
        held = await client.dbsize()
        counts = [await client.zcard(key) for key in shared.values()]
        if held != sessions + len(shared) or counts != [sessions] * len(shared):
            raise BenchError(
                f"Redis holds {held} keys and {counts} timers, live and carts for {sessions} sessions"
            )
        key_bytes = {"session": await memory_usage(client, states)} | {
            name: await memory_usage(client, [key]) for name, key in shared.items()
        }
        await give_offers(store, ids)
        with_offers = await used_memory(client)
        disturbed = await other_keys(client) != others
        offer_keys = [store.offer_key(session_id) for session_id in ids]
        return RedisMemory(
            sessions=sessions,
            events_per_session=round(applied / sessions),
            used_memory=after - before,
            key_bytes=key_bytes,
            offer_used_memory=with_offers - after,
            offer_key_bytes=await memory_usage(client, offer_keys),
            offer_state_bytes=await memory_usage(client, states) - key_bytes["session"],
            others_changed=disturbed,
        )
    finally:
        await client.flushdb()
        await client.aclose()
