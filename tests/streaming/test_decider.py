from __future__ import annotations

import json
from typing import Any

import pytest

from streaming.budget import Budget
from streaming.decider import Decider, ModelSlot
from streaming.delivery import LocalDelivery
from streaming.journal import FileJournal
from streaming.policy import Rule
from streaming.records import DecisionMade, ReasonsMade
from streaming.scoring import Scorer, load_model
from streaming.store import MemoryStore
from tests.factories import T0, comparing_shopper, event, small_model

PAUSE = 30.0
RULE = Rule(
    id=1,
    priority=10,
    min_risk=0.5,
    min_cart_value=50.0,
    discount_percent=10,
    title="10% off",
    message="Take 10% off now.",
    daily_budget=100,
    valid_minutes=30,
)


class Tab:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def push(self, data: str) -> None:
        self.frames.append(json.loads(data))


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return load_model(small_model(), label="cart-risk@7")


class World:
    """A decider over an in-memory store, with one open tab per session and a fixed clock."""

    def __init__(
        self, scorer: Scorer | None, *, holdout: float = 0.0, rules: list[Rule] | None = None
    ) -> None:
        self.store = MemoryStore(pause_seconds=PAUSE)
        self.delivery = LocalDelivery()
        self.recorded: list[DecisionMade] = []
        self.journal = FileJournal()
        self.tabs: dict[str, Tab] = {}
        self.rules = [RULE] if rules is None else rules
        self.decider = Decider(
            store=self.store,
            delivery=self.delivery,
            models=ModelSlot(active=scorer),
            rules=lambda: self.rules,
            budget=Budget(),
            journal=self.journal,
            record=self._record,
            pause_seconds=PAUSE,
            cooldown_seconds=600,
            holdout_percent=holdout,
        )

    async def _record(self, decisions: list[DecisionMade]) -> None:
        self.recorded.extend(decisions)

    async def shopper(self, session: str, at: float, events: list[Any]) -> Tab:
        tab = self.tabs.setdefault(session, Tab())
        self.delivery.attach(session, tab)
        await self.store.apply(session_id=session, site="demo", events=events, now=at)
        return tab

    async def tick(self, now: float) -> bool:
        found = await self.decider.step(now)
        await self.decider.drain()
        return found


async def test_it_sends_one_offer_per_pause(scorer: Scorer):
    world = World(scorer)
    tab = await world.shopper("s1", T0, comparing_shopper("s1"))
    assert await world.tick(T0 + PAUSE - 0.01) is False
    assert await world.tick(T0 + PAUSE) is True
    assert [f["type"] for f in tab.frames] == ["offer"]
    offer = tab.frames[0]
    assert "risk" not in offer and "model" not in offer  # nothing of how it was decided
    assert offer["discount_percent"] == 10
    assert offer["code"].startswith("SAVE10-") and offer["offer_id"].startswith("o-")
    assert await world.tick(T0 + PAUSE + 60) is False
    assert len(tab.frames) == 1
    (decision,) = world.recorded
    assert (decision.outcome, decision.pause_key, decision.model) == (
        "offer",
        "s1:9",
        "cart-risk@7",
    )
    assert decision.features["views_since_add"] == 8 and decision.features["cart_value"] == 120
    assert decision.offer is not None and decision.offer.code == offer["code"]
    assert decision.reasons[0]["feature"] == "views_since_add"


async def test_the_offer_goes_out_before_its_reasons_are_worked_out(scorer: Scorer):
    world = World(scorer)
    tab = await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.decider.step(T0 + PAUSE)
    assert [f["type"] for f in tab.frames] == ["offer"]
    assert world.recorded == []  # reasons and records follow in the background
    await world.decider.drain()
    assert len(world.recorded) == 1 and world.recorded[0].reasons


async def test_every_open_tab_of_the_session_gets_the_offer(scorer: Scorer):
    world = World(scorer)
    first = await world.shopper("s1", T0, comparing_shopper("s1"))
    second = Tab()
    world.delivery.attach("s1", second)
    other = await world.shopper("s2", T0 + 10, [event("s2-view", "page_view", url="/")])
    await world.tick(T0 + PAUSE)
    assert len(first.frames) == len(second.frames) == 1
    assert first.frames == second.frames
    assert other.frames == []


async def test_a_new_pause_inside_the_cooldown_is_decided_but_gets_no_offer(scorer: Scorer):
    world = World(scorer)
    tab = await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.tick(T0 + PAUSE)
    await world.shopper("s1", T0 + 100, [event("again", "product_view", product_id="x", price=1)])
    await world.tick(T0 + 100 + PAUSE)
    assert [d.outcome for d in world.recorded] == ["offer", "no_offer"]
    assert len(tab.frames) == 1


async def test_a_session_that_bought_is_not_decided(scorer: Scorer):
    world = World(scorer)
    events = [*comparing_shopper("s1"), event("buy", "purchase", order_id="A-1")]
    tab = await world.shopper("s1", T0, events)
    assert await world.tick(T0 + PAUSE + 1) is False
    assert world.recorded == [] and tab.frames == []


async def test_a_session_with_an_empty_cart_is_not_decided(scorer: Scorer):
    world = World(scorer)
    events = [*comparing_shopper("s1"), event("rm", "remove_from_cart", product_id="sku-1")]
    await world.shopper("s1", T0, events)
    assert await world.tick(T0 + PAUSE + 1) is False


async def test_non_activity_does_not_move_the_pause(scorer: Scorer):
    world = World(scorer)
    await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.shopper(
        "s1", T0 + 20, [event("hb", "heartbeat"), event("hide", "visibility", state="hidden")]
    )
    assert await world.tick(T0 + PAUSE) is True
    assert world.recorded[0].features["hidden"] == 1


async def test_the_control_group_is_decided_and_recorded_but_never_shown(scorer: Scorer):
    world = World(scorer, holdout=100)
    tab = await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.tick(T0 + PAUSE)
    assert tab.frames == []
    (decision,) = world.recorded
    assert decision.outcome == "holdout" and decision.offer is None and decision.reasons


async def test_a_low_risk_cart_gets_no_offer_and_no_reasons(scorer: Scorer):
    world = World(scorer)
    tab = await world.shopper("s1", T0, comparing_shopper("s1", views=0))
    await world.tick(T0 + PAUSE)
    (decision,) = world.recorded
    assert decision.outcome == "no_offer" and decision.risk is not None and decision.risk < 0.5
    assert decision.reasons == [] and tab.frames == []


async def test_without_a_model_every_pause_gets_no_offer():
    world = World(None)
    await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.tick(T0 + PAUSE)
    (decision,) = world.recorded
    assert (decision.outcome, decision.risk, decision.model) == ("no_offer", None, "")


async def test_every_decision_says_why_in_words(scorer: Scorer):
    world = World(scorer, rules=[_with_budget(1)])
    await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.shopper("s2", T0, comparing_shopper("s2"))
    await world.shopper("s3", T0, comparing_shopper("s3", views=0))
    await world.tick(T0 + PAUSE)
    whys = {d.session_id: d.why for d in world.recorded}
    assert whys["s1"].startswith("risk ") and whys["s1"].endswith("reached the rule's 0.50")
    assert whys["s2"] == "daily budget spent"
    assert whys["s3"].startswith("risk 0.") and whys["s3"].endswith("below the rule's 0.50")
    # in the journal as well, on its way to the database
    journaled = [entry.record for entry in await world.journal.take(10)]
    assert {d.why for d in journaled if isinstance(d, DecisionMade)} == set(whys.values())


async def test_the_feed_hears_of_decisions_as_soon_as_their_offers_are_out(scorer: Scorer):
    world = World(scorer)
    heard: list[tuple[str, str, bool]] = []

    async def on_decided(decisions: list[DecisionMade]) -> None:
        heard.extend((d.session_id, d.outcome, bool(d.reasons)) for d in decisions)

    world.decider.on_decided = on_decided
    tab = await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.decider.step(T0 + PAUSE)
    assert [f["type"] for f in tab.frames] == ["offer"]
    assert heard == [("s1", "offer", False)] and world.recorded == []  # reasons still to come
    await world.decider.drain()
    assert world.recorded[0].reasons


async def test_a_feed_that_fails_stops_no_decision(scorer: Scorer):
    world = World(scorer)

    async def on_decided(_decisions: list[DecisionMade]) -> None:
        raise RuntimeError("the feed is broken")

    world.decider.on_decided = on_decided
    tab = await world.shopper("s1", T0, comparing_shopper("s1"))
    assert await world.tick(T0 + PAUSE) is True
    assert len(tab.frames) == 1 and [d.outcome for d in world.recorded] == ["offer"]


async def test_a_rule_whose_daily_budget_is_used_up_makes_no_more_offers(scorer: Scorer):
    world = World(scorer, rules=[_with_budget(2)])
    for i in range(3):
        await world.shopper(f"s{i}", T0, comparing_shopper(f"s{i}"))
    await world.tick(T0 + PAUSE)
    assert sorted(d.outcome for d in world.recorded) == ["no_offer", "offer", "offer"]


async def test_an_offer_made_while_away_waits_for_the_shopper(scorer: Scorer):
    world = World(scorer)
    await world.store.apply(session_id="s1", site="demo", events=comparing_shopper("s1"), now=T0)
    await world.tick(T0 + PAUSE)
    state = await world.store.get("s1")
    assert state is not None
    frame = state.live_offer(T0 + PAUSE + 60)
    assert frame is not None and json.loads(frame)["type"] == "offer"
    assert state.live_offer(T0 + PAUSE + 31 * 60) is None  # expired
    offer_id = json.loads(frame)["offer_id"]
    await world.store.apply(
        session_id="s1",
        site="demo",
        events=[event("ok", "offer_accepted", offer_id=offer_id)],
        now=T0 + 40,
    )
    assert state.live_offer(T0 + 41) is None


async def test_a_model_that_fails_decides_no_offer_and_the_worker_goes_on() -> None:
    class Broken:
        label = "broken@1"

        def predict_proba(self, _matrix: Any) -> Any:
            raise RuntimeError("corrupt trees")

    world = World(Broken())  # type: ignore[arg-type]
    await world.shopper("s1", T0, comparing_shopper("s1"))
    assert await world.tick(T0 + PAUSE) is True
    assert world.recorded[0].outcome == "no_offer"


def _with_budget(budget: int) -> Rule:
    from dataclasses import replace

    return replace(RULE, daily_budget=budget)


async def test_reasons_wait_while_a_pause_is_about_to_fall_due_but_not_for_long(scorer: Scorer):
    world = World(scorer)
    await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.shopper("s2", T0 + 0.01, comparing_shopper("s2"))  # due 10 ms after s1
    await world.shopper("s3", T0 + 5, comparing_shopper("s3"))  # due 5 s after s1
    assert await world.decider.step(T0 + PAUSE) is True  # s1's offer goes out
    assert await world.decider.explain(T0 + PAUSE) is False  # s2 falls due in 10 ms: wait
    assert world.recorded == []
    assert await world.decider.step(T0 + PAUSE + 0.01) is True  # s2's offer
    assert await world.decider.explain(T0 + PAUSE + 0.01) is True  # s3 is far: explain s1
    assert [d.session_id for d in world.recorded] == ["s1"] and world.recorded[0].reasons
    await world.shopper("s4", T0 + PAUSE + 0.2, comparing_shopper("s4"))  # keeps a pause near
    assert await world.decider.explain(T0 + PAUSE + 0.5) is True  # s3 due at +5 s: still far
    assert [d.session_id for d in world.recorded] == ["s1", "s2"]


async def test_reasons_that_waited_a_second_are_worked_out_even_when_pauses_keep_falling_due(
    scorer: Scorer,
):
    world = World(scorer)
    await world.shopper("s1", T0, comparing_shopper("s1"))
    await world.decider.step(T0 + PAUSE)
    await world.shopper("s2", T0 + 1.5, comparing_shopper("s2"))
    near = T0 + 1.5 + PAUSE - 0.01  # s2 is 10 ms from its deadline
    world.decider.explain_within = 1.0
    assert await world.decider.explain(near) is True  # s1 has waited far more than a second
    assert [d.session_id for d in world.recorded] == ["s1"]


class BrokenTab:
    """A socket whose connection is gone: every push raises."""

    def push(self, _data: str) -> None:
        raise ConnectionResetError("the client disconnected")


class BrokenDelivery(LocalDelivery):
    """A delivery that fails outright (a channel layer that lost Redis)."""

    async def deliver_many(self, _frames: Any) -> int:
        raise ConnectionError("the channel layer is down")


async def test_a_broken_socket_harms_no_other_offer_and_the_whole_batch_is_recorded(
    scorer: Scorer,
):
    world = World(scorer)
    tab = await world.shopper("s1", T0, comparing_shopper("s1"))
    world.delivery.attach("s1", BrokenTab())
    others = [await world.shopper(f"s{i}", T0, comparing_shopper(f"s{i}")) for i in range(2, 5)]
    assert await world.tick(T0 + PAUSE) is True
    assert [f["type"] for f in tab.frames] == ["offer"]
    assert all([f["type"] for f in other.frames] == ["offer"] for other in others)
    assert sorted(d.session_id for d in world.recorded) == ["s1", "s2", "s3", "s4"]
    assert world.delivery.open_sockets() == 4  # the broken one was let go


async def test_a_delivery_that_fails_loses_no_decision(scorer: Scorer):
    world = World(scorer)
    world.delivery = world.decider.delivery = BrokenDelivery()
    for i in range(3):
        await world.shopper(f"s{i}", T0, comparing_shopper(f"s{i}"))
    assert await world.tick(T0 + PAUSE) is True
    assert len(world.recorded) == 3
    assert all(d.offer is not None and d.sent_at is not None for d in world.recorded)
    live = [await world.store.get(f"s{i}") for i in range(3)]
    assert all(s is not None and s.live_offer(T0 + PAUSE + 1) for s in live)


class JournalingTab(Tab):
    """A tab that, when an offer reaches it, looks at what the journal already holds."""

    def __init__(self, journal: FileJournal) -> None:
        super().__init__()
        self.journal = journal
        self.journaled_first: list[bool] = []

    def push(self, data: str) -> None:
        code = json.loads(data)["code"]
        held = [e.record for e in self.journal._entries]  # what it holds now
        self.journaled_first.append(
            any(isinstance(r, DecisionMade) and r.offer and r.offer.code == code for r in held)
        )
        super().push(data)


async def test_a_decision_is_in_the_journal_before_its_offer_is_sent(scorer: Scorer):
    world = World(scorer)
    await world.shopper("s1", T0, comparing_shopper("s1"))
    tab = JournalingTab(world.journal)
    world.delivery.attach("s1", tab)
    assert await world.tick(T0 + PAUSE) is True
    assert tab.journaled_first == [True]
    (decision,) = [
        e.record for e in await world.journal.take(10) if isinstance(e.record, DecisionMade)
    ]
    assert decision.outcome == "offer"
    reasons = [e.record for e in await world.journal.take(10) if isinstance(e.record, ReasonsMade)]
    assert [r.pause_key for r in reasons] == [decision.pause_key] and reasons[0].reasons


async def test_a_full_backlog_holds_pauses_back_until_the_record_catches_up(scorer: Scorer):
    world = World(scorer)
    world.decider.backlog_limit = 2
    await world.journal.append([ReasonsMade(f"x:{i}", []) for i in range(3)])
    tab = await world.shopper("s1", T0, comparing_shopper("s1"))
    assert await world.tick(T0 + PAUSE) is False
    assert tab.frames == []
    await world.journal.done(await world.journal.take(3))
    assert await world.tick(T0 + PAUSE + 1) is True
    assert [f["type"] for f in tab.frames] == ["offer"]
