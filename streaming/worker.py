"""The stream worker's loop: small steps that say whether they found work, one loop that sleeps.

Embedded mode runs it inside the server's event loop; `runstream` runs it alone (Redis mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable

from streaming.store import SessionStore

log = logging.getLogger(__name__)

Step = Callable[[float], Awaitable[bool]]


class Background:
    """A step that runs in a task of its own, never awaited by the loop: one that waits on the
    database (reloading rules, models, stats) must not hold up the pauses, least of all while
    the database is away. At most one run at a time; what it finds counts for nothing."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.__name__ = getattr(step, "__name__", "step")
        self._task: asyncio.Task[bool] | None = None

    async def __call__(self, now: float) -> bool:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.step(now))
            self._task.add_done_callback(self._report)
        return False

    def _report(self, task: asyncio.Task[bool]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("stream worker step %s failed", self.__name__, exc_info=task.exception())

    async def settle(self) -> None:
        """Wait for the run under way, if any (at shutdown)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


class StreamWorker:
    def __init__(
        self,
        *,
        store: SessionStore,
        clock: Callable[[], float] = time.time,
        tick_seconds: float = 0.25,
        evict_every: float = 5.0,
        wake_at: Callable[[], float | None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.evict_every = evict_every
        self.wake_at = wake_at
        self.steps: list[Step] = [self.step_evict]
        # What its start is logged as: a front end of Redis mode runs the loop without deciding.
        self.started_message = "stream worker started: deciding pauses"
        self.finishers: list[Callable[[], Awaitable[None]]] = []
        self._next_evict = 0.0
        self._stopping = asyncio.Event()

    async def step_evict(self, now: float) -> bool:
        """Forget idle sessions, at most every `evict_every` seconds."""
        if now < self._next_evict:
            return False
        self._next_evict = now + self.evict_every
        evicted = await self.store.evict_idle(now)
        if evicted:
            log.debug("evicted %d idle sessions", evicted)
        return evicted > 0

    async def tick(self, now: float) -> bool:
        found = False
        for step in self.steps:
            try:
                found = await step(now) or found
            except Exception:
                # One failing step must not stop the loop; the next tick tries again.
                log.exception("stream worker step %s failed", getattr(step, "__name__", step))
        return found

    def sleep_seconds(self, now: float) -> float:
        """Until the next tick, or sooner when a pause deadline comes first."""
        wake = self.wake_at() if self.wake_at else None
        if wake is None:
            return self.tick_seconds
        return max(0.0, min(self.tick_seconds, wake - now))

    async def run(self) -> None:
        log.info(self.started_message)
        while not self._stopping.is_set():
            found = await self.tick(self.clock())
            if not found:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), self.sleep_seconds(self.clock()) or 0.001
                    )
        for finish in self.finishers:
            try:
                await finish()
            except Exception:
                log.exception("stream worker could not finish %s", finish)
        log.info("stream worker stopped")

    def stop(self) -> None:
        self._stopping.set()


class IdleCollector:
    """Runs Python's cyclic garbage collector between pauses, not in the middle of a burst.

    Left to itself, the collector runs whenever enough objects have been allocated, wherever
    that happens: with thousands of sockets open a young collection stops the event loop for
    about 10 ms and a full one for a few hundred, and a burst of pauses allocates the most.
    Once `take_over` is called this step collects instead: the young generation when
    `threshold` objects wait and no pause falls due within `margin` seconds, or when `ceiling`
    objects wait whatever is due; every 20th collection is of the middle generation too, and a
    full one is made only when no pause falls due within `full_margin`.
    """

    def __init__(
        self,
        *,
        next_due: Callable[[], float | None],
        threshold: int = 50_000,
        ceiling: int = 1_000_000,
        margin: float = 0.02,
        full_margin: float = 0.5,
        full_every: int = 100,
    ) -> None:
        self.next_due = next_due
        self.threshold = threshold
        self.ceiling = ceiling
        self.margin = margin
        self.full_margin = full_margin
        self.full_every = full_every
        self.collections = [0, 0, 0]  # by generation
        self._young = 0
        self._middle = 0

    def take_over(self) -> None:
        """From now on collections happen in `step` (call `give_back` to undo)."""
        gc.disable()

    def give_back(self) -> None:
        gc.enable()

    async def step(self, now: float) -> bool:
        waiting = gc.get_count()[0]
        if waiting < self.threshold:
            return False
        due = self.next_due()
        if waiting < self.ceiling and due is not None and due <= now + self.margin:
            return False  # a pause is about to fall due: after it
        self._young += 1
        generation = 0
        if self._young % 20 == 0:
            generation = 1
            self._middle += 1
            if self._middle >= self.full_every and (due is None or due > now + self.full_margin):
                generation, self._middle = 2, 0
        gc.collect(generation)
        self.collections[generation] += 1
        return False
