from __future__ import annotations

import datetime as dt

import pytest

from offers import services
from offers.models import Decision, Offer
from offers.recorder import Recorder, ShopperMark
from streaming.decider import DecisionMade, OfferMade
from streaming.features import FEATURE_NAMES
from streaming.policy import Outcome
from tests.factories import T0, stored_model

pytestmark = pytest.mark.django_db(transaction=True)


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


@pytest.mark.usefixtures("demo_site")
async def test_the_recorder_writes_decisions_offers_and_their_outcomes():
    from asgiref.sync import sync_to_async

    await sync_to_async(stored_model)(1)
    recorder = Recorder()
    await recorder.record(
        [decision("s1:3"), decision("s2:5", outcome="no_offer", with_offer=False)]
    )
    recorder.mark(ShopperMark("s1", "o-s1:3", "offer_shown", T0 + 1))
    recorder.mark(ShopperMark("s1", "o-s1:3", "offer_accepted", T0 + 2))
    recorder.mark(ShopperMark("s2", "o-s1:3", "offer_accepted", T0 + 2))  # not s2's offer
    recorder.mark(ShopperMark("s1", None, "purchase", T0 + 3))
    assert await recorder.step(T0) is True

    def check() -> None:
        d1 = Decision.objects.select_related("model").get(pause_key="s1:3")
        assert d1.model is not None
        assert (d1.outcome, d1.model_label, d1.model.label, d1.reasons[0]["feature"]) == (
            "offer",
            "cart-risk@1",
            "cart-risk@1",
            "views_since_add",
        )
        assert d1.converted_at == dt.datetime.fromtimestamp(T0 + 3, tz=dt.UTC)
        offer = Offer.objects.get(public_id="o-s1:3")
        assert offer.shown_at is not None and offer.accepted_at == dt.datetime.fromtimestamp(
            T0 + 2, tz=dt.UTC
        )
        assert Decision.objects.get(pause_key="s2:5").converted_at is None
        assert Offer.objects.count() == 1

    await sync_to_async(check)()
    assert recorder.pending() == 1  # s2's event waits for an offer of its own, a while


@pytest.mark.usefixtures("demo_site")
async def test_an_offer_written_while_its_event_is_applied_is_marked_on_the_next_try(monkeypatch):
    from django.db.models import QuerySet

    worker, front_end = Recorder(), Recorder()
    await worker.record([decision("s1:3")])
    front_end.mark(ShopperMark("s1", "o-s1:3", "offer_shown", T0 + 1))
    update = QuerySet.update

    def update_then_the_worker_writes(self: QuerySet[Offer], **fields: object) -> int:
        marked = update(self, **fields)  # no offer yet: nothing marked
        monkeypatch.setattr(QuerySet, "update", update)
        worker._write(list(worker._decisions), [])  # the worker's write lands right now
        return marked

    monkeypatch.setattr(QuerySet, "update", update_then_the_worker_writes)
    await front_end.step(T0 + 1)
    assert front_end.pending() == 1  # tried again, not taken for marked
    await front_end.step(T0 + 2)
    offer = await Offer.objects.aget(public_id="o-s1:3")
    assert offer.shown_at == dt.datetime.fromtimestamp(T0 + 1, tz=dt.UTC)
    assert front_end.pending() == 0


@pytest.mark.usefixtures("demo_site")
async def test_a_pause_is_recorded_once_even_when_written_twice():
    from asgiref.sync import sync_to_async

    recorder = Recorder()
    await recorder.record([decision("s1:3")])
    await recorder.step(T0)
    await recorder.record([decision("s1:3"), decision("s1:4")])
    await recorder.step(T0 + 1)
    count = await sync_to_async(lambda: (Decision.objects.count(), Offer.objects.count()))()
    assert count == (2, 2)


@pytest.mark.usefixtures("demo_site")
async def test_a_database_hiccup_keeps_decisions_queued_until_it_passes(monkeypatch):
    from asgiref.sync import sync_to_async

    recorder = Recorder()
    await recorder.record([decision("s1:3")])
    real = services.decision_record_batch

    def down(*, decisions):  # noqa: ARG001  # the real one's keyword
        from django.db import OperationalError

        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "decision_record_batch", down)
    assert await recorder.step(T0) is False
    assert recorder.pending() == 1
    monkeypatch.setattr(services, "decision_record_batch", real)
    assert await recorder.step(T0 + 1) is True
    assert await sync_to_async(Decision.objects.count)() == 1
    assert recorder.pending() == 0


@pytest.mark.usefixtures("demo_site")
def test_an_offer_code_is_used_once_and_not_after_it_expires():
    from asgiref.sync import async_to_sync

    from offers.services import offer_redeem

    recorder = Recorder()
    async_to_sync(recorder.record)([decision("s1:3")])
    async_to_sync(recorder.step)(T0)
    code = Offer.objects.get().code
    during = dt.datetime.fromtimestamp(T0 + 60, tz=dt.UTC)
    assert offer_redeem(code=code, at=during) is not None
    assert offer_redeem(code=code, at=during) is None
    assert offer_redeem(code="SAVE10-NOSUCHCODE", at=during) is None
    Offer.objects.update(redeemed_at=None)
    assert offer_redeem(code=code, at=dt.datetime.fromtimestamp(T0 + 1801, tz=dt.UTC)) is None
