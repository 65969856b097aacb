"""A shopper's data on request: one session's clickstream and records, and their deletion."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from offers.models import Decision, Mark, Offer
from streaming.eventlog import forget_session


def session_forget(session_id: str, *, event_log: str | None = None) -> dict[str, int]:
    """Delete the session's events from the event log and its decisions, offers and marks;
    returns how many of each went. (A session still live in a server's memory is forgotten there
    after SESSION_IDLE_SECONDS without an event.)"""
    directory = settings.EVENT_LOG if event_log is None else event_log
    events = forget_session(directory, session_id) if directory else 0
    with transaction.atomic():
        offers, _ = Offer.objects.filter(session=session_id).delete()
        marks, _ = Mark.objects.filter(session=session_id).delete()
        decisions, _ = Decision.objects.filter(session=session_id).delete()
    return {"events": events, "decisions": decisions, "offers": offers, "marks": marks}
