from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from streaming.store import MemoryStore
from streaming.worker import Background, IdleCollector, StreamWorker
from tests.factories import T0


async def test_the_evict_step_forgets_idle_sessions_and_says_it_found_work():
    store = MemoryStore(idle_seconds=60)
    await store.open(session_id="a", site="demo", now=T0)
    worker = StreamWorker(store=store, evict_every=5)
    assert await worker.step_evict(T0 + 59) is False
    assert len(store) == 1
    assert await worker.step_evict(T0 + 61) is False  # not yet 5 s since the last sweep
    assert await worker.step_evict(T0 + 65) is True
    assert len(store) == 0


async def test_a_failing_step_does_not_stop_the_loop():
    calls: list[float] = []
    three_calls = asyncio.Event()

    async def broken(now: float) -> bool:
        calls.append(now)
        if len(calls) >= 3:
            three_calls.set()
        raise RuntimeError("database hiccup")

    worker = StreamWorker(store=MemoryStore(), clock=lambda: T0, tick_seconds=0.001)
    worker.steps.append(broken)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(three_calls.wait(), 1)
    worker.stop()
    await asyncio.wait_for(task, 1)
    assert task.done() and task.exception() is None


# --- the garbage collector, between pauses ----------------------------------------------------


@pytest.fixture
def collector_due() -> Iterator[tuple[IdleCollector, list[float | None]]]:
    due: list[float | None] = [None]
    collector = IdleCollector(next_due=lambda: due[0], threshold=100, ceiling=10**9)
    collector.take_over()
    try:
        yield collector, due
    finally:
        collector.give_back()
    assert gc.isenabled()


def allocate(n: int) -> list[list[int]]:
    """Container objects, which the collector counts."""
    return [[] for _ in range(n)]


async def test_the_collector_waits_for_a_gap_between_pauses(collector_due):
    collector, due = collector_due
    assert not gc.isenabled()
    kept = allocate(500)
    assert gc.get_count()[0] >= 100
    due[0] = T0 + 0.01  # a pause falls due in 10 ms
    await collector.step(T0)
    assert collector.collections == [0, 0, 0] and gc.get_count()[0] >= 100
    due[0] = T0 + 1.0
    await collector.step(T0)
    assert collector.collections == [1, 0, 0] and gc.get_count()[0] < 100
    assert len(kept) == 500


async def test_past_its_ceiling_the_collector_does_not_wait(collector_due):
    collector, due = collector_due
    collector.ceiling = 300
    due[0] = T0  # a pause is due right now
    kept = allocate(50)
    await collector.step(T0)
    assert collector.collections == [0, 0, 0]
    kept += allocate(500)
    await collector.step(T0)
    assert collector.collections == [1, 0, 0]


async def test_a_full_collection_needs_a_longer_gap(collector_due):
    collector, due = collector_due
    collector.full_every = 1  # every middle collection could be a full one
    due[0] = T0 + 0.1  # far enough for a young collection, not for a full one
    kept = []
    for _ in range(20):
        kept.append(allocate(200))  # (freed at once, they would not count)
        await collector.step(T0)
    assert collector.collections == [19, 1, 0]
    due[0] = None  # nothing due at all
    for _ in range(20):
        kept.append(allocate(200))
        await collector.step(T0)
    assert collector.collections == [38, 1, 1]


async def test_a_step_in_the_background_never_holds_up_the_others():
    database_back = asyncio.Event()
    reloads: list[float] = []
    decided: list[float] = []

    async def reload_rules(now: float) -> bool:  # waits on a database that is away
        reloads.append(now)
        await database_back.wait()
        return True

    async def decide(now: float) -> bool:
        decided.append(now)
        return False

    clock = iter(range(1000))
    worker = StreamWorker(store=MemoryStore(), clock=lambda: T0 + next(clock))
    reload_step = Background(reload_rules)
    worker.steps = [reload_step, decide]
    for _ in range(5):
        await worker.tick(worker.clock())
        await asyncio.sleep(0)  # the loop turns: the reload runs, and waits
    assert len(decided) == 5 and len(reloads) == 1  # one reload at a time, and no one waits
    database_back.set()
    await reload_step.settle()
    await worker.tick(worker.clock())
    await reload_step.settle()
    assert len(reloads) == 2
