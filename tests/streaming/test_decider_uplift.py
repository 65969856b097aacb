"""The decider with an uplift model: scored in the same batch, acted on by uplift rules."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from streaming.budget import Budget
from streaming.decider import Decider, ModelSlot
from streaming.delivery import LocalDelivery
from streaming.journal import FileJournal
from streaming.policy import Targeting
from streaming.records import DecisionMade
from streaming.scoring import Matrix, Scorer, load_model
from streaming.store import MemoryStore
from streaming.uplift_model import UpliftScorer
from tests.factories import T0, comparing_shopper, small_model
from tests.streaming.test_decider import PAUSE, RULE

BY_UPLIFT = replace(RULE, min_risk=0.0, targeting=Targeting.UPLIFT)


class FixedUplift(UpliftScorer):
    """Every row: the same chances to buy with an offer and without; counts its calls."""

    def __init__(self, p_offer: float, p_none: float) -> None:
        self.label = "uplift@3"
        self.chances = (p_offer, p_none)
        self.rows_scored: list[int] = []

    def predict(self, X: Matrix) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        self.rows_scored.append(len(X))
        return np.full(len(X), self.chances[0]), np.full(len(X), self.chances[1])


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return load_model(small_model(), label="cart-risk@7")


async def decide_one(
    scorer: Scorer, uplift: UpliftScorer | None, rule=BY_UPLIFT, *, margin: float = 0.30
) -> DecisionMade:
    store = MemoryStore(pause_seconds=PAUSE)
    recorded: list[DecisionMade] = []

    async def record(decisions: list[DecisionMade]) -> None:
        recorded.extend(decisions)

    decider = Decider(
        store=store,
        delivery=LocalDelivery(),
        models=ModelSlot(active=scorer, uplift=uplift),
        rules=lambda: [rule],
        budget=Budget(),
        journal=FileJournal(),
        record=record,
        pause_seconds=PAUSE,
        cooldown_seconds=600,
        holdout_percent=0.0,
        margins=lambda: {"demo": margin},
    )
    await store.apply(session_id="s1", site="demo", events=comparing_shopper("s1"), now=T0)
    assert await decider.step(T0 + PAUSE)
    await decider.drain()
    (decision,) = recorded
    return decision


async def test_an_uplift_rule_offers_where_the_offer_pays_and_says_why(scorer):
    decision = await decide_one(scorer, FixedUplift(0.50, 0.10))
    assert decision.outcome == "offer"
    # cart 120: 120 x (0.50 x 0.20 - 0.10 x 0.30) = 8.40
    assert decision.why == "uplift: +0.40 chance to buy, worth 8.40 net"


async def test_an_uplift_rule_holds_back_where_the_offer_does_not_pay(scorer):
    decision = await decide_one(scorer, FixedUplift(0.30, 0.25))
    assert decision.outcome == "no_offer"
    assert decision.why.endswith("not worth the discount")
    # at a 60% margin the same chances pay: 0.30 x 0.50 > 0.25 x 0.60
    decision = await decide_one(scorer, FixedUplift(0.30, 0.24), margin=0.60)
    assert decision.outcome == "offer"


async def test_without_an_uplift_model_an_uplift_rule_waits(scorer):
    decision = await decide_one(scorer, None)
    assert decision.outcome == "no_offer"
    assert decision.why == "no uplift model yet: the rule targets by uplift"


async def test_the_uplift_model_scores_only_while_a_rule_targets_by_uplift(scorer):
    uplift = FixedUplift(0.0, 1.0)
    decision = await decide_one(scorer, uplift, RULE)
    assert decision.outcome == "offer" and uplift.rows_scored == []
    await decide_one(scorer, uplift)
    assert uplift.rows_scored == [1]


async def test_an_uplift_model_that_fails_to_score_offers_nothing_and_stops_nothing(scorer):
    class Broken(FixedUplift):
        def predict(self, _X: Matrix) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
            raise RuntimeError("boom")

    decision = await decide_one(scorer, Broken(0.9, 0.0))
    assert decision.outcome == "no_offer"
    assert decision.risk is not None  # the risk model scored as ever
