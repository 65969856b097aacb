from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from prometheus_client import REGISTRY

from offers import services
from offers.models import DeadRecord, Decision, Mark, Offer
from offers.recorder import Recorder
from streaming.features import FEATURE_NAMES
from streaming.journal import FileJournal
from streaming.policy import Outcome
from streaming.records import DecisionMade, MarkMade, OfferMade, ReasonsMade, Record
from tests.factories import T0, stored_model

pytestmark = pytest.mark.django_db(transaction=True)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def decision(pause_key: str, *, outcome: str = "offer", with_offer: bool = True) -> DecisionMade:
    session = pause_key.split(":")[0]
    made = DecisionMade(
        session_id=session,
        site="demo",
        pause_key=pause_key,
        deadline=T0,
        at=T0 + 0.01,
        outcome=Outcome(outcome),
        risk=0.9,
        shadow_risk=None,
        model="cart-risk@1",
        shadow_model="",
        features=dict.fromkeys(FEATURE_NAMES, 1.0),
        cart_value=120.0,
        reasons=[{"feature": "views_since_add", "value": 8.0, "contribution": 1.2}],
    )
    if with_offer:
        made.offer = OfferMade(
            offer_id=f"o-{pause_key}",
            code=f"SAVE10-{pause_key.replace(':', '')}",
            rule_id=None,
            title="10% off",
            message="m",
            discount_percent=10,
            created_at=T0,
            expires_at=T0 + 1800,
        )
    return made


async def recorded(*records: Record, journal: FileJournal | None = None) -> Recorder:
    """A recorder that wrote `records` from a journal of its own (in memory)."""
    recorder = Recorder(journal or FileJournal())
    await recorder.journal.append(list(records))
    while recorder.journal.waiting():
        assert await recorder.step(T0) is True
    return recorder


def utc(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC)


@pytest.mark.usefixtures("demo_site")
async def test_the_recorder_writes_decisions_offers_and_their_outcomes():
    await sync_to_async(stored_model)(1)
    await recorded(
        decision("s1:3"),
        decision("s2:5", outcome="no_offer", with_offer=False),
        MarkMade("s1", "o-s1:3", "offer_shown", T0 + 1),
        MarkMade("s1", "o-s1:3", "offer_accepted", T0 + 2),
        MarkMade("s2", "o-s1:3", "offer_accepted", T0 + 2),  # not s2's offer
        MarkMade("s1", None, "purchase", T0 + 3),
    )

    def check() -> None:
        d1 = Decision.objects.select_related("model").get(pause_key="s1:3")
        assert d1.model is not None
        assert (d1.outcome, d1.model_label, d1.model.label, d1.reasons[0]["feature"]) == (
            "offer",
            "cart-risk@1",
            "cart-risk@1",
            "views_since_add",
        )
        assert d1.converted_at == utc(T0 + 3)
        offer = Offer.objects.get(public_id="o-s1:3")
        assert offer.shown_at is not None and offer.accepted_at == utc(T0 + 2)
        assert Decision.objects.get(pause_key="s2:5").converted_at is None
        assert Offer.objects.count() == 1
        # s2's mark names another session's offer: kept, never applied
        assert list(Mark.objects.filter(applied=False).values_list("session", flat=True)) == ["s2"]

    await sync_to_async(check)()


def the_record() -> list[tuple[object, ...]]:
    return [
        (d.pause_key, d.converted_at, o.shown_at, o.accepted_at, o.dismissed_at)
        for d in Decision.objects.order_by("pause_key")
        for o in Offer.objects.filter(decision=d)
    ]


@pytest.mark.usefixtures("demo_site")
async def test_marks_and_purchases_before_their_decision_end_the_record_the_same():
    marks = [
        MarkMade("s1", "o-s1:3", "offer_shown", T0 + 1),
        MarkMade("s1", "o-s1:3", "offer_dismissed", T0 + 2),
        MarkMade("s1", None, "purchase", T0 + 3),
    ]
    await recorded(decision("s1:3"), *marks)
    in_order = await sync_to_async(the_record)()
    await sync_to_async(lambda: (Offer.objects.all().delete(), Decision.objects.all().delete()))()
    await sync_to_async(lambda: Mark.objects.all().delete())()
    # the marks first, the decision a batch later: kept, then applied when it is written
    recorder = await recorded(*marks)
    assert await sync_to_async(Mark.objects.filter(applied=False).count)() == 3
    await recorder.journal.append([decision("s1:3")])
    await recorder.step(T0)
    assert await sync_to_async(the_record)() == in_order
    assert in_order[0][1:] == (utc(T0 + 3), utc(T0 + 1), None, utc(T0 + 2))
    assert await sync_to_async(Mark.objects.filter(applied=False).count)() == 0


@pytest.mark.usefixtures("demo_site")
async def test_a_mark_the_decisions_write_missed_is_applied_by_the_sweep():
    # Another process wrote the decision while this one recorded the purchase: the purchase
    # found no decision and waits; the sweep applies it.
    await sync_to_async(services.decision_record_batch)(decisions=[decision("s1:3")])
    await Mark.objects.acreate(session="s1", kind="purchase", at=utc(T0 + 3))  # not applied
    assert await sync_to_async(services.marks_sweep)(now=timezone.now()) == 1
    assert (await Decision.objects.aget()).converted_at == utc(T0 + 3)


@pytest.mark.usefixtures("demo_site")
async def test_a_decision_is_recorded_with_why_it_was_made_so():
    said = decision("s1:3")
    said.why = "risk 0.90 reached the rule's 0.60"
    unsaid = decision("s2:3", outcome="no_offer", with_offer=False)  # an older record: no why
    rambling = decision("s3:3", outcome="no_offer", with_offer=False)
    rambling.why = "w" * 500
    await recorded(said, unsaid, rambling)

    def whys() -> dict[str, str]:
        return dict(Decision.objects.values_list("pause_key", "why"))

    assert await sync_to_async(whys)() == {
        "s1:3": "risk 0.90 reached the rule's 0.60",
        "s2:3": "",
        "s3:3": "w" * 200,
    }


def test_a_decision_written_on_its_own_keeps_its_why_too(demo_site):
    said = decision("s1:3")
    said.why = "daily budget spent"
    row = services._decision_row(said, {"demo": demo_site.pk}, {}, set())
    assert row.why == "daily budget spent"


@pytest.mark.usefixtures("demo_site")
async def test_a_pause_is_recorded_once_even_when_written_twice():
    await recorded(decision("s1:3"))
    await recorded(decision("s1:3"), decision("s1:4"), MarkMade("s1", "o-s1:3", "offer_shown", T0))
    await recorded(MarkMade("s1", "o-s1:3", "offer_shown", T0 + 5))  # the same mark again
    count = await sync_to_async(lambda: (Decision.objects.count(), Offer.objects.count()))()
    assert count == (2, 2)
    assert (await Offer.objects.aget(public_id="o-s1:3")).shown_at == utc(T0)
    assert await Mark.objects.acount() == 1


@pytest.mark.usefixtures("demo_site")
async def test_a_database_outage_keeps_records_in_the_journal_until_it_passes(monkeypatch):
    recorder = Recorder(FileJournal())
    await recorder.journal.append([decision("s1:3"), MarkMade("s1", None, "purchase", T0 + 1)])
    real = services.record_write

    def down(*, records):  # noqa: ARG001  # the real one's keyword
        from django.db import OperationalError

        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(services, "record_write", down)
    assert await recorder.step(T0) is False
    assert recorder.journal.waiting() == 2
    assert await recorder.step(T0 + 0.1) is False  # backing off: not even tried
    monkeypatch.setattr(services, "record_write", real)
    assert await recorder.step(T0 + 1) is True
    assert recorder.journal.waiting() == 0
    assert (await Decision.objects.aget()).converted_at == utc(T0 + 1)


@pytest.mark.usefixtures("demo_site")
async def test_records_that_cannot_be_written_are_set_aside_and_the_rest_go_on():
    await recorded(decision("s1:3"))
    colliding = decision("s2:4")
    assert colliding.offer is not None
    colliding.offer.code = "SAVE10-s13"  # s1:3's code
    nowhere = decision("s3:5")
    nowhere.site = "deleted"
    before = metric("liveoffers_records_dead_total", kind="decision")
    await recorded(
        colliding, nowhere, decision("s4:6"), MarkMade("s4", "o-s4:6", "offer_shown", T0)
    )
    assert await sync_to_async(sorted)(Decision.objects.values_list("pause_key", flat=True)) == [
        "s1:3",
        "s4:6",
    ]
    assert (await Offer.objects.aget(public_id="o-s4:6")).shown_at == utc(T0)
    dead = [
        (d.kind, d.payload["pause_key"], d.error) async for d in DeadRecord.objects.order_by("id")
    ]
    assert [(kind, key) for kind, key, _ in dead] == [("decision", "s3:5"), ("decision", "s2:4")]
    assert "deleted" in dead[0][2] and "code" in dead[1][2].lower()
    assert metric("liveoffers_records_dead_total", kind="decision") == before + 2


@pytest.mark.usefixtures("demo_site")
async def test_reasons_fill_in_a_decision_recorded_before_them():
    bare = decision("s1:3")
    bare.reasons = []
    reasons = ReasonsMade("s1:3", [{"feature": "adds", "value": 2.0, "contribution": 0.5}])
    recorder = await recorded(reasons)  # before its decision: tried again later
    assert await Decision.objects.acount() == 0
    await recorder.journal.append([bare])
    await recorder.step(T0)
    await recorder.step(T0 + 1)
    assert (await Decision.objects.aget()).reasons == reasons.reasons


@pytest.mark.usefixtures("demo_site")
def test_an_offer_code_is_used_once_on_its_own_site_and_not_after_it_expires():
    from offers.models import Site
    from offers.services import OfferRefused, Refusal, offer_redeem

    def refusal(**how: Any) -> Refusal:
        with pytest.raises(OfferRefused) as refused:
            offer_redeem(total=Decimal("90.00"), **how)
        return refused.value.refusal

    Site.objects.create(key="other", name="Another shop")
    services.decision_record_batch(decisions=[decision("s1:3")])
    code = Offer.objects.get().code
    during = dt.datetime.fromtimestamp(T0 + 60, tz=dt.UTC)
    # not where it was offered
    assert refusal(code=code, site="other", order_id="1", at=during) == Refusal.UNKNOWN
    offer = offer_redeem(code=code, site="demo", order_id="1", total=Decimal("90.00"), at=during)
    assert offer.redeemed_at == during
    assert refusal(code=code, site="demo", order_id="2", at=during) == Refusal.USED
    assert refusal(code="SAVE10-NOSUCHCODE", site="demo", order_id="2", at=during) == (
        Refusal.UNKNOWN
    )
    Offer.objects.update(redeemed_at=None, redeemed_order_id="")
    late = dt.datetime.fromtimestamp(T0 + 1801, tz=dt.UTC)
    assert refusal(code=code, site="demo", order_id="3", at=late) == Refusal.EXPIRED


@pytest.mark.usefixtures("demo_site")
async def test_a_deciding_process_holds_its_record_back_while_pauses_fall_due_but_not_for_long():
    due = [T0 + 0.01]
    recorder = Recorder(FileJournal(), next_due=lambda: due[0], yield_at_most=1.0)
    await recorder.journal.append([decision("s1:3")])
    await recorder.step_in_background(T0)
    await recorder.step_in_background(T0 + 0.5)  # pauses still falling due: it waits
    assert recorder._writing is None  # nothing started
    await recorder.step_in_background(T0 + 1.0)  # a second is long enough
    await recorder.flush()
    assert await Decision.objects.acount() == 1
    await recorder.journal.append([decision("s2:3")])
    due[0] = T0 + 60  # nothing falls due soon: it writes at once
    await recorder.step_in_background(T0 + 2.0)
    await recorder.flush()
    assert await Decision.objects.acount() == 2
