"""The record: decisions, their offers, and what shoppers did with them, written to the database.

A worker step that writes in batches, off the event loop (`database_sync_to_async`), through the
services `decision_record_batch`, `offer_mark` and `session_convert`. A batch that fails (a
database hiccup) stays queued and is tried again on the next tick, so nothing decided is lost
while the process lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from channels.db import database_sync_to_async

from offers import metrics, services
from streaming.decider import DecisionMade
from streaming.store import SessionStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ShopperMark:
    """What a shopper did after a decision: saw, took or closed an offer, or bought."""

    session_id: str
    offer_id: str | None
    kind: str  # offer_shown, offer_accepted, offer_dismissed, purchase
    at: float
    tries: int = 0


class Recorder:
    MAX_MARK_TRIES = 50

    def __init__(self, *, store: SessionStore | None = None) -> None:
        self.store = store
        self._writing: asyncio.Task[bool] | None = None
        self._decisions: deque[DecisionMade] = deque()
        self._marks: deque[ShopperMark] = deque()

    async def record(self, decisions: list[DecisionMade]) -> None:
        self._decisions.extend(decisions)
        for decision in decisions:
            metrics.DECISIONS.labels(decision.outcome).inc()
            done = decision.sent_at if decision.sent_at is not None else decision.at
            metrics.DECISION_DELAY.observe(max(0.0, done - decision.deadline))

    async def step_in_background(self, now: float) -> bool:
        """The worker's step: write in a task of its own, so that no pause waits for the database."""
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self.step(now))
        return False

    async def flush(self) -> None:
        """Everything queued, written (at shutdown)."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        await self.step(0.0)

    def mark(self, mark: ShopperMark) -> None:
        self._marks.append(mark)

    def pending(self) -> int:
        return len(self._decisions) + len(self._marks)

    async def step(self, _now: float) -> bool:
        if not self._decisions and not self._marks:
            return False
        decisions = list(self._decisions)
        marks = list(self._marks)
        try:
            retry = await database_sync_to_async(self._write)(decisions, marks)
        except Exception:
            metrics.RECORD_FAILURES.inc()
            log.exception("could not record %d decisions; trying again", len(decisions))
            return False
        # Marks may have been queued while writing: drop exactly what was written.
        for _ in range(len(decisions)):
            self._decisions.popleft()
        if self.store is not None:
            # Only now, with the decisions in the database, are their pauses done for good.
            for decision in decisions:
                await self.store.finish(decision.session_id, decision.pause_key)
        for _ in range(len(marks)):
            self._marks.popleft()
        self._marks.extend(retry)
        return True

    def _write(self, decisions: list[DecisionMade], marks: list[ShopperMark]) -> list[ShopperMark]:
        if decisions:
            services.decision_record_batch(decisions=decisions)
        retry = []
        for mark in marks:
            if not self._apply(mark):
                mark.tries += 1
                if mark.tries < self.MAX_MARK_TRIES:
                    retry.append(mark)
        return retry

    @staticmethod
    def _apply(mark: ShopperMark) -> bool:
        at = services.utc(mark.at)
        if mark.kind == "purchase":
            services.session_convert(session_id=mark.session_id, at=at)
            return True
        assert mark.offer_id is not None
        return services.offer_mark(
            session_id=mark.session_id, offer_id=mark.offer_id, kind=mark.kind, at=at
        )
