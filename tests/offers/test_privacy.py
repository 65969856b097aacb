from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from offers.models import Decision, Mark, Offer
from streaming.eventlog import EventLog, read_log
from streaming.policy import Outcome
from tests.factories import T0, event

pytestmark = pytest.mark.django_db


def test_forget_session_deletes_its_events_and_records_and_nothing_else(
    demo_site, settings, tmp_path: Path
):
    settings.EVENT_LOG = str(tmp_path)
    log = EventLog(tmp_path, days=30)
    for session in ("gone", "kept"):
        log.append(session, "demo", T0, [event("e-1", "add_to_cart", product_id="p", price=5)])
        decision = Decision.objects.create(
            site=demo_site,
            session=session,
            pause_key=f"{session}:1",
            at=timezone.now(),
            outcome=Outcome.OFFER,
        )
        Offer.objects.create(
            decision=decision,
            public_id=f"o-{session}",
            session=session,
            code=f"CODE-{session}",
            title="t",
            message="m",
            discount_percent=10,
            created_at=timezone.now(),
            expires_at=timezone.now(),
        )
        Mark.objects.create(session=session, kind=Mark.Kind.PURCHASE, at=timezone.now())
    log.flush()
    out = io.StringIO()
    call_command("forget_session", "gone", stdout=out)
    assert out.getvalue().strip() == "1 events, 1 decisions, 1 offers, 1 marks deleted"
    assert [e.session for e in read_log(tmp_path)] == ["kept"]
    for model in (Decision, Offer, Mark):
        assert list(model.objects.values_list("session", flat=True)) == ["kept"]
