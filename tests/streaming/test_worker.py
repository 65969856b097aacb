from __future__ import annotations

import asyncio

from streaming.store import MemoryStore
from streaming.worker import StreamWorker
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
