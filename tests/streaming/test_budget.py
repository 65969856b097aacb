"""Daily budgets: offers and holdouts of a rule never more than its budget, in any process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from streaming.budget import Budget, RedisBudget, day_of
from streaming.policy import HOLDOUT, NO_BUDGET, NO_OFFER, OFFER, Rule, decide
from tests.factories import T0
from tests.streaming.test_redis_store import _client, redis_url  # noqa: F401  # its fixture


def rule(rule_id: int, budget: int) -> Rule:
    return Rule(
        id=rule_id,
        priority=rule_id,
        min_risk=0.0,
        min_cart_value=0.0,
        discount_percent=10,
        title="t",
        message="m",
        daily_budget=budget,
        valid_minutes=30,
    )


async def test_a_budget_grants_what_is_left_and_a_new_day_starts_afresh():
    budget = Budget()
    assert await budget.reserve({1: 30, 2: 5}, {1: 50, 2: 5}, T0) == {1: 30, 2: 5}
    assert await budget.reserve({1: 30, 2: 1}, {1: 50, 2: 5}, T0) == {1: 20, 2: 0}
    await budget.seed(day_of(T0), {1: 10})  # the record says less: the count never goes down
    assert budget.used(T0) == {1: 50, 2: 5}
    assert await budget.reserve({1: 3}, {1: 50}, T0 + 86400) == {1: 3}


def test_a_batch_gives_back_what_its_budget_did_not_grant_from_its_end():
    n = 6
    verdicts = decide(
        risks=np.full(n, 0.9),
        sites=["demo"] * n,
        cart_values=np.full(n, 100.0),
        last_offer_at=np.full(n, np.nan),
        holdout_buckets=np.array([0, 9000, 9000, 0, 9000, 9000], dtype=np.float64),
        rules=[rule(1, 100)],
        used_today={},
        now=T0,
        cooldown_seconds=600,
        holdout_percent=10,
    )
    assert verdicts.spent == {1: 6}
    assert list(verdicts.outcome) == [HOLDOUT, OFFER, OFFER, HOLDOUT, OFFER, OFFER]
    assert verdicts.keep_within({1: 4}) == 2
    assert list(verdicts.outcome) == [HOLDOUT, OFFER, OFFER, HOLDOUT, NO_OFFER, NO_OFFER]
    assert verdicts.spent == {1: 4} and list(verdicts.why[4:]) == [NO_BUDGET, NO_BUDGET]
    assert verdicts.verdict(5).reason == "daily budget spent"
    assert verdicts.whys()[4:] == ["daily budget spent"] * 2


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:  # noqa: F811  # the fixture
    first = await _client(redis_url)
    await first.flushdb()
    others = [await _client(redis_url) for _ in range(3)]
    yield [first, *others]
    await first.flushdb()
    for client in [first, *others]:
        await client.aclose()


@pytest.mark.services
async def test_workers_sharing_a_budget_never_spend_past_it(clients: list[aioredis.Redis]):
    budgets = [RedisBudget(client) for client in clients]

    async def worker(budget: RedisBudget) -> int:
        granted = 0
        for _ in range(40):
            granted += (await budget.reserve({7: 3}, {7: 50}, T0))[7]
        return granted

    spent = await asyncio.gather(*(worker(b) for b in budgets))
    assert sum(spent) == 50
    assert await budgets[0].spent(day_of(T0)) == {7: 50}


@pytest.mark.services
async def test_a_budget_counter_lost_with_redis_is_seeded_from_the_record(
    clients: list[aioredis.Redis],
):
    budget = RedisBudget(clients[0])
    await budget.reserve({7: 10}, {7: 50}, T0)
    await clients[0].flushdb()  # Redis restarted without its data
    await budget.seed(day_of(T0), {7: 10})
    assert await budget.reserve({7: 45}, {7: 50}, T0) == {7: 40}
    await budget.seed(day_of(T0), {7: 10})  # the record lags behind: it never lowers the count
    assert await budget.spent(day_of(T0)) == {7: 50}
