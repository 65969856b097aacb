"""Each rule's daily budget (UTC day): offers and holdouts together, never more than the budget.

A holdout spends budget as the offer it stands for would have. `Budget` counts in this process
(embedded mode: one process decides); `RedisBudget` counts in Redis, so that every worker of
Redis mode spends from the same counter, atomically.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from streaming import lua
from streaming.redis_client import Client

_SPEND_LUA: Final = lua.script("spend")
_SEED_LUA: Final = lua.script("seed_budget")
# A day's counters are kept a little over a day, for `reconcile` and late workers.
_TTL_MS: Final = str(3 * 24 * 3600 * 1000)


def day_of(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class Budget:
    """Offers and holdouts made per rule today, in this process."""

    def __init__(self) -> None:
        self._day = ""
        self._used: dict[int, int] = {}

    def used(self, now: float) -> Mapping[int, int]:
        """What each rule spent today, as far as this process knows (to decide a batch by)."""
        if day_of(now) != self._day:
            self._day, self._used = day_of(now), {}
        return self._used

    async def seed(self, day: str, used: Mapping[int, int]) -> None:
        """What the record says `day` spent: a count only ever goes up."""
        if day != self._day:
            self._day, self._used = day, {}
        for rule_id, count in used.items():
            self._used[rule_id] = max(self._used.get(rule_id, 0), count)

    async def reserve(
        self, wanted: Mapping[int, int], limits: Mapping[int, int], now: float
    ) -> dict[int, int]:
        """Spend what a batch wants of each rule (rule id -> count), within its daily budget;
        returns what was granted."""
        used = self.used(now)
        granted = {
            rule_id: max(0, min(count, limits[rule_id] - used.get(rule_id, 0)))
            for rule_id, count in wanted.items()
        }
        self._count(granted, now)
        return granted

    def _count(self, granted: Mapping[int, int], now: float) -> None:
        """What this process knows it spent (others may spend too: a shared counter has the
        last word)."""
        used = self.used(now)
        for rule_id, grant in granted.items():
            self._used[rule_id] = used.get(rule_id, 0) + grant


class RedisBudget(Budget):
    """The counters in Redis (`{prefix}budget:{day}`), shared by every worker."""

    def __init__(self, client: Client, *, prefix: str = "lo:") -> None:
        super().__init__()
        self.redis = client
        self.prefix = prefix
        self._spend = client.register_script(_SPEND_LUA)
        self._seed = client.register_script(_SEED_LUA)

    def key(self, day: str) -> str:
        return f"{self.prefix}budget:{day}"

    async def seed(self, day: str, used: Mapping[int, int]) -> None:
        args: list[str | int] = [_TTL_MS]
        for rule_id, count in used.items():
            args += [rule_id, count]
        await self._seed(keys=[self.key(day)], args=args)
        raw = await self.redis.hgetall(self.key(day))
        self._day, self._used = day, {int(k): int(v) for k, v in raw.items()}

    async def reserve(
        self, wanted: Mapping[int, int], limits: Mapping[int, int], now: float
    ) -> dict[int, int]:
        wanted = {rule_id: count for rule_id, count in wanted.items() if count > 0}
        if not wanted:
            return {}
        day = day_of(now)
        args: list[str | int] = [_TTL_MS]
        for rule_id, count in wanted.items():
            args += [rule_id, count, limits[rule_id]]
        reply = await self._spend(keys=[self.key(day)], args=args)
        granted = {rule_id: int(g) for rule_id, g in zip(wanted, reply, strict=True)}
        self._count(granted, now)  # for deciding this worker's next batch
        return granted

    async def spent(self, day: str) -> dict[int, int]:
        raw = await self.redis.hgetall(self.key(day))
        return {int(k): int(v) for k, v in raw.items()}
