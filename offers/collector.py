"""What the collector socket and `POST /collect/` share: rate limit, apply, count."""

from __future__ import annotations

from dataclasses import dataclass, field

from offers import metrics
from offers.runtime import Runtime
from streaming.protocol import OFFER_EVENTS, Event, ProtocolError, Purchase
from streaming.records import MarkMade

# Events that record what became of an offer or of the session, in the database.
OUTCOME_EVENTS = OFFER_EVENTS | {"purchase"}


@dataclass(slots=True)
class IngestResult:
    acked: list[str] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)


async def ingest(
    runtime: Runtime,
    *,
    session_id: str,
    site: str,
    items: list[Event | ProtocolError],
    client: str,
    now: float,
) -> IngestResult:
    """Apply the valid events of one frame (or request) in order; say what became of each."""
    result = IngestResult()
    events: list[Event] = []
    for item in items:
        if isinstance(item, Event):
            events.append(item)
        else:
            result.errors.append(item)
    metrics.EVENTS_RECEIVED.inc(len(items))
    runtime.feed.count_events(len(items))
    if events:
        granted = runtime.limits.take(session_id, client, len(events), now)
        if granted < len(events):
            limited = events[granted:]
            events = events[:granted]
            result.errors.append(
                ProtocolError(
                    "rate_limited",
                    f"{len(limited)} event(s) over the rate limit; send them again later",
                    limited[0].id,
                )
            )
    if events:
        applied = await runtime.store.apply(
            session_id=session_id, site=site, events=events, now=now
        )
        result.acked = applied.acked
        result.errors.extend(applied.errors)
        metrics.EVENTS_ACCEPTED.inc(len(applied.fresh))
        if runtime.event_log is not None:
            runtime.event_log.append(session_id, site, now, applied.fresh)
        if applied.duplicates:
            metrics.EVENTS_DUPLICATE.inc(applied.duplicates)
        ignored = 0
        marks: list[MarkMade] = []
        for event in applied.fresh:
            if applied.names_another_offer(event):
                ignored += 1  # acknowledged, and nothing more: not the session's offer
                continue
            if event.name == "offer_accepted":
                runtime.feed.count_accepted()
            if event.name in OUTCOME_EVENTS:
                marks.append(_mark(session_id, event, now))
        fresh = list(marks)
        # A mark sent again is journaled again (the record makes it once): its first ack may
        # have been lost with a process killed between applying it and journaling it.
        marks += [
            _mark(session_id, event, now)
            for event in applied.repeated
            if event.name in OUTCOME_EVENTS and not applied.names_another_offer(event)
        ]
        # Into the journal before the acknowledgement goes out: acknowledged is never lost.
        await runtime.journal.append(marks)
        if fresh:
            await runtime.feed.on_marks(fresh)  # the dashboards' items follow
        if ignored:
            metrics.OFFER_EVENTS_IGNORED.inc(ignored)
    for error in result.errors:
        metrics.EVENTS_REFUSED.labels(error.code).inc()
    return result


def _mark(session_id: str, event: Event, now: float) -> MarkMade:
    props = event.props
    if isinstance(props, Purchase):
        return MarkMade(
            session_id,
            None,
            event.name,
            now,
            order_id=props.order_id or "",
            total=props.total,
            code=(props.code or "").strip().upper(),
        )
    return MarkMade(session_id, getattr(props, "offer_id", None), event.name, now)
