"""The record: what the journal holds, written to the database in bulk.

A worker step that takes the journal's oldest entries, writes them off the event loop
(`database_sync_to_async`, `services.record_write`) and only then tells the journal they are
done. A database that is away leaves them in the journal (a file in embedded mode, a Redis stream
in Redis mode) to be tried again, a little later each time; a record that cannot be written is set
aside in the dead-letter table and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.utils import timezone

from offers import metrics, services
from streaming.journal import Entry, Journal
from streaming.records import DecisionMade, ReasonsMade, Record, as_json, kind_of

log = logging.getLogger(__name__)

# Reasons whose decision another recorder is still writing are tried again this many times.
_REASON_TRIES = 40
# Tries while the database is away: at most this far apart, so the record follows soon after.
_MAX_BACKOFF = 1.0


@dataclass(slots=True)
class _Late:
    reasons: ReasonsMade
    tries: int = 0


class Recorder:
    def __init__(
        self,
        journal: Journal,
        *,
        batch_size: int = 2000,
        sweep_every: float = 5.0,
        next_due: Callable[[], float | None] | None = None,
        yield_within: float = 0.05,
        yield_at_most: float = 1.0,
    ) -> None:
        self.journal = journal
        self.batch_size = batch_size
        self.sweep_every = sweep_every
        # In a process that decides: writing takes the interpreter from the loop that sends
        # offers, so a batch waits while a pause falls due within `yield_within` seconds, for at
        # most `yield_at_most` seconds.
        self.next_due = next_due
        self.yield_within = yield_within
        self.yield_at_most = yield_at_most
        self._waiting_since: float | None = None
        self._writing: asyncio.Task[bool] | None = None
        self._late: list[_Late] = []
        self._retry_at = 0.0
        self._backoff = 0.0
        self._next_sweep = 0.0
        self._next_refresh = 0.0

    async def step_in_background(self, now: float) -> bool:
        """The worker's step: write in a task of its own, so that no pause waits for the database."""
        if self._writing is None or self._writing.done():
            if self._pauses_first(now):
                return False
            self._writing = asyncio.create_task(self.step(now))
        return False

    def _pauses_first(self, now: float) -> bool:
        """Whether to leave the interpreter to the pauses about to fall due, a moment longer."""
        due = self.next_due() if self.next_due is not None else None
        if due is None or due > now + self.yield_within or not self.journal.waiting():
            self._waiting_since = None
            return False
        if self._waiting_since is None:
            self._waiting_since = now
        return now - self._waiting_since < self.yield_at_most

    async def step(self, now: float) -> bool:
        """Write one batch of the journal; returns whether there was one."""
        if now >= self._next_refresh:
            self._next_refresh = now + 1.0
            await self.journal.refresh()
        if now < self._retry_at:
            return False
        try:
            entries = await self.journal.take(self.batch_size)
            wrote = await self._write(entries) if entries or self._late else False
            if now >= self._next_sweep:
                self._next_sweep = now + self.sweep_every
                await database_sync_to_async(_sweep)()
        except Exception as exc:
            # The database (or Redis) is away: everything stays in the journal, tried again later.
            metrics.RECORD_FAILURES.inc()
            first = self._backoff == 0.0
            self._backoff = min(_MAX_BACKOFF, max(0.25, self._backoff * 2))
            self._retry_at = now + self._backoff
            if first:
                log.exception("could not write the record; it waits in the journal")
            else:
                log.warning(
                    "still cannot write the record (%s); next try in %.2f s", exc, self._backoff
                )
            return False
        if self._backoff:
            log.warning("the record is being written again")
        self._backoff = 0.0
        return wrote

    async def _write(self, entries: Sequence[Entry]) -> bool:
        records: list[Record] = []
        unreadable: list[Entry] = []
        for entry in entries:
            if entry.record is None:
                unreadable.append(entry)
            else:
                records.append(entry.record)
        late, self._late = self._late, []
        records.extend(item.reasons for item in late)
        written = await database_sync_to_async(services.record_write)(records=records)
        dead = written.dead
        tries = {id(item.reasons): item.tries for item in late}
        for reasons in written.unmatched:
            count = tries.get(id(reasons), 0) + 1
            if count < _REASON_TRIES:
                self._late.append(_Late(reasons, count))
            else:
                log.warning("reasons of %s: no such decision; dropped", reasons.pause_key)
        if dead or unreadable:
            await database_sync_to_async(_set_aside)(dead, unreadable)
        await self.journal.done(entries)
        metrics.RECORDS_WRITTEN.inc(len(entries))
        return bool(entries)

    async def flush(self, within: float = 30.0) -> bool:
        """Write everything the journal holds (at shutdown), for at most `within` seconds;
        returns whether it is all written. What is not stays in the journal for later."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        deadline = time.monotonic() + within
        self._retry_at = 0.0
        while time.monotonic() < deadline:
            entries = await self.journal.take(self.batch_size)
            if not entries:
                return True
            try:
                await self._write(entries)
            except Exception:
                log.exception("could not write the record before stopping; trying again")
                await asyncio.sleep(0.5)
        log.error("stopping with records not yet written: they wait in the journal")
        return False


def record_decisions(decisions: Sequence[DecisionMade]) -> None:
    """Count decisions made and how late each was (the journal has the records themselves)."""
    for decision in decisions:
        metrics.DECISIONS.labels(decision.outcome).inc()
        done = decision.sent_at if decision.sent_at is not None else decision.at
        metrics.DECISION_DELAY.observe(max(0.0, done - decision.deadline))


def _sweep() -> None:
    services.marks_sweep(now=timezone.now())


def _set_aside(dead: list[tuple[Record, str]], unreadable: list[Entry]) -> None:
    rows = [(kind_of(record), as_json(record), error) for record, error in dead]
    rows += [("unreadable", {"bytes": entry.raw[:4000].hex()}, entry.error) for entry in unreadable]
    for kind, _, error in rows:
        log.error("%s record set aside (dead letter): %s", kind, error)
    services.record_set_aside(rows=rows)
    for kind, _, _ in rows:
        metrics.RECORDS_DEAD.labels(kind).inc()
