"""The record checked against itself and against Redis: what `manage.py reconcile` reports.

Each check gives a `Finding`: what it looked at, how many things are off and a few of them. A
finding with `off > 0` means the record is wrong somewhere (exit status 1); notes (records set
aside, records still on their way) are listed but are not errors, unless records have waited
longer than `STALE_SECONDS`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate

from offers.models import DeadRecord, Decision, Mark, Offer, OfferRule
from offers.services import OFFER_MARKS
from streaming.journal import read_directory
from streaming.records import DecisionMade, Record, decode

EXAMPLES: Final = 10
# Records still in the journal this long after they were made mean the recorder is stuck.
STALE_SECONDS: Final = 60.0


@dataclass
class Finding:
    check: str
    off: int = 0
    examples: list[str] = field(default_factory=list)
    note: str = ""

    def add(self, example: str) -> None:
        self.off += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


def reconcile(*, since: dt.datetime | None = None, redis_url: str = "") -> list[Finding]:
    decisions = Decision.objects.all()
    offers = Offer.objects.all()
    marks = Mark.objects.all()
    dead = DeadRecord.objects.all()
    if since is not None:
        decisions = decisions.filter(at__gte=since)
        offers = offers.filter(created_at__gte=since)
        marks = marks.filter(at__gte=since)
        dead = dead.filter(created_at__gte=since)
    findings = [
        _offers_without_decision(decisions),
        _decisions_without_offer(offers),
        _duplicate_pauses(decisions),
        _budget_overspent(decisions),
        _purchases_not_applied(marks),
        _offer_marks_not_applied(marks),
    ]
    waiting: list[Record] = []
    if redis_url:
        stream, waiting = _redis_waiting(redis_url)
        findings.append(stream)
        findings.append(_live_offers_not_recorded(redis_url, waiting))
    elif settings.RECORD_JOURNAL:
        findings.append(_journal_waiting(Path(settings.RECORD_JOURNAL)))
    findings.append(_set_aside(dead))
    return findings


def _offers_without_decision(decisions: QuerySet[Decision]) -> Finding:
    finding = Finding("offer decisions without their offer")
    for pause_key in decisions.filter(outcome="offer", offer__isnull=True).values_list(
        "pause_key", flat=True
    ):
        finding.add(pause_key)
    return finding


def _decisions_without_offer(offers: QuerySet[Offer]) -> Finding:
    finding = Finding("offers whose decision is not an offer")
    for code, outcome in offers.exclude(decision__outcome="offer").values_list(
        "code", "decision__outcome"
    ):
        finding.add(f"{code} (decision {outcome})")
    return finding


def _duplicate_pauses(decisions: QuerySet[Decision]) -> Finding:
    finding = Finding("pauses decided more than once")
    rows = decisions.values("pause_key").annotate(n=Count("id")).filter(n__gt=1)
    for row in rows:
        finding.add(f"{row['pause_key']} x{row['n']}")
    return finding


def _budget_overspent(decisions: QuerySet[Decision]) -> Finding:
    finding = Finding("daily budgets overspent (offers and holdouts of a rule in a UTC day)")
    rows = (
        decisions.filter(outcome__in=["offer", "holdout"])
        .exclude(rule=None)
        .annotate(day=TruncDate("at", tzinfo=dt.UTC))
        .values("rule", "day")
        .annotate(n=Count("id"))
    )
    budgets = dict(OfferRule.objects.values_list("id", "daily_budget"))
    for row in rows:
        budget = budgets.get(row["rule"])
        if budget is not None and row["n"] > budget:
            finding.add(f"rule {row['rule']} on {row['day']}: {row['n']} of {budget}")
    return finding


def _purchases_not_applied(marks: QuerySet[Mark]) -> Finding:
    finding = Finding("purchases acknowledged but not applied")
    buyers = marks.filter(kind=Mark.Kind.PURCHASE).values("session")
    for pause_key in Decision.objects.filter(session__in=buyers, converted_at=None).values_list(
        "pause_key", flat=True
    ):
        finding.add(f"{pause_key} not converted")
    return finding


def _offer_marks_not_applied(marks: QuerySet[Mark]) -> Finding:
    finding = Finding("offer marks acknowledged but not applied")
    for kind, column in OFFER_MARKS.items():
        rows = marks.filter(kind=kind).values_list("offer_public_id", "session")
        ids = dict(rows)
        missing = Offer.objects.filter(
            Q(public_id__in=ids) & Q(**{f"{column}__isnull": True})
        ).values_list("public_id", "session")
        for public_id, session in missing:
            if ids.get(public_id) == session:
                finding.add(f"{public_id} has no {column}")
    return finding


def _set_aside(dead: QuerySet[DeadRecord]) -> Finding:
    count = dead.count()
    examples = [f"{d.kind}: {d.error[:120]}" for d in dead[:EXAMPLES]]
    return Finding(
        "records set aside (dead letters, see the admin)",
        examples=examples,
        note=f"{count} set aside" if count else "",
    )


def _waiting(check: str, records: Iterable[Record], now: float) -> Finding:
    finding = Finding(check)
    count = 0
    for record in records:
        count += 1
        at = getattr(record, "at", None)
        if isinstance(at, float) and now - at > STALE_SECONDS:
            finding.add(f"{type(record).__name__} of {getattr(record, 'session_id', '?')}")
    if count:
        finding.note = f"{count} on their way to the database"
    return finding


def _journal_waiting(directory: Path) -> Finding:
    check = f"records waiting in the journal {directory} for over {STALE_SECONDS:.0f} s"
    return _waiting(check, (e.record for e in read_directory(directory) if e.record), time.time())


def _redis_waiting(redis_url: str) -> tuple[Finding, list[Record]]:
    from streaming.redis_client import Shards, connect_sync

    client = connect_sync(redis_url)
    shards = Shards.of_url(redis_url)
    try:
        entries = []
        for shard in shards:
            entries += client.xrange(shards.records(shard), count=1_000_000)
    finally:
        client.close()
    records = []
    for _, fields in entries:
        try:
            records.append(decode(fields[b"r"]))
        except Exception:  # an unreadable entry is the recorder's to set aside
            continue
    check = f"records waiting in Redis for over {STALE_SECONDS:.0f} s"
    return _waiting(check, records, time.time()), records


def _live_offers_not_recorded(redis_url: str, waiting: list[Record]) -> Finding:
    """Offers sessions hold in Redis (shown again on reconnect) that are neither in the
    database nor on their way to it."""
    import msgspec

    from streaming.redis_client import Shards, connect_sync

    finding = Finding("offers in Redis with no record")
    on_the_way = {
        r.offer.offer_id for r in waiting if isinstance(r, DecisionMade) and r.offer is not None
    }
    client = connect_sync(redis_url)
    try:
        keys = list(client.scan_iter(match=Shards.of_url(redis_url).offers_pattern(), count=1000))
        frames = [client.get(key) for key in keys]
    finally:
        client.close()
    ids = {}
    for frame in frames:
        if frame:
            offer = msgspec.json.decode(frame)
            ids[offer.get("offer_id")] = offer.get("code")
    recorded = set(
        Offer.objects.filter(public_id__in=list(ids)).values_list("public_id", flat=True)
    )
    for offer_id, code in ids.items():
        if offer_id not in recorded and offer_id not in on_the_way:
            finding.add(f"{code} ({offer_id})")
    return finding
