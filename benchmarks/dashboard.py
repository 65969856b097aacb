"""`bench dashboard`: what the operator dashboard costs a second, from 100 to 5,000 events/s.

In one process, the real `DashboardFeed` with a real (in-memory) channel layer and one subscribed
dashboard channel: each simulated second counts its events one frame at a time, records its
decisions (one for every 40 events, all `offer`: the busiest case for the feed, which samples
above 50 a second) and sends one `stats` frame. The CPU time of the feed's own work is measured
per simulated second. The baseline beside it is the same feed without sampling, which sends a
frame for every decision.
"""

from __future__ import annotations

import asyncio
import time
from argparse import ArgumentParser
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmarks import Benchmark, Progress
from streaming.policy import Outcome
from streaming.ratelimit import TokenBucket

RATES = (100, 1_000, 2_500, 5_000)
EVENTS_PER_DECISION = 40


@dataclass
class DashboardReport:
    seconds: int
    rows: list[dict[str, float]] = field(default_factory=list)

    def table(self) -> str:
        lines = [
            f"dashboard (CPU per second of traffic, {self.seconds} s each, real feed and channel layer)",
            f"{'events/s':>10} {'feed µs/s':>12} {'stats frame µs':>16} {'frames/s':>10} {'unsampled µs/s':>16} {'unsampled frames/s':>20}",
        ]
        for row in self.rows:
            lines.append(
                f"{row['events_per_second']:>10,.0f} {row['feed_us_per_second']:>12,.0f} "
                f"{row['stats_us']:>16,.0f} {row['frames_per_second']:>10,.0f} "
                f"{row['unsampled_us_per_second']:>16,.0f} {row['unsampled_frames_per_second']:>20,.0f}"
            )
        first, last = self.rows[0], self.rows[-1]
        lines.append(
            f"{last['events_per_second'] / first['events_per_second']:.0f}x the traffic: feed "
            f"x{last['feed_us_per_second'] / first['feed_us_per_second']:.1f}, stats frame "
            f"x{last['stats_us'] / first['stats_us']:.1f}, unsampled "
            f"x{last['unsampled_us_per_second'] / first['unsampled_us_per_second']:.1f}"
        )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "rows": self.rows}


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=int, default=20, help="simulated seconds per rate (default 20)"
    )


def run(options: Mapping[str, Any], progress: Progress) -> DashboardReport:
    report = DashboardReport(seconds=options["seconds"])
    asyncio.run(measure(RATES[-1], 2, sampled=True))  # warm up: imports, encoders, the layer
    for rate in RATES:
        progress(f"{rate:,} events/s")
        row = asyncio.run(measure(rate, options["seconds"], sampled=True))
        baseline = asyncio.run(measure(rate, options["seconds"], sampled=False))
        row["unsampled_us_per_second"] = baseline["feed_us_per_second"]
        row["unsampled_frames_per_second"] = baseline["frames_per_second"]
        report.rows.append(row)
    return report


async def measure(rate: int, seconds: int, *, sampled: bool) -> dict[str, float]:
    from channels.layers import get_channel_layer

    from offers.alerts import GROUP
    from offers.dashboard import DashboardFeed
    from streaming.decider import ModelSlot
    from streaming.store import MemoryStore

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    feed = DashboardFeed(store=MemoryStore(), models=ModelSlot())
    feed._next_uplift = float("inf")  # the uplift query is the database's, not the feed's, cost
    start = time.time()
    if not sampled:
        feed._decision_frames.bucket = TokenBucket(rate=1e12, burst=10**12, now=start)
    feed_cpu = stats_cpu = 0.0
    frames = 0
    for second in range(seconds):
        now = start + second
        decisions = [_decision(i, now) for i in range(rate // EVENTS_PER_DECISION)]
        t0 = time.process_time()
        for _ in range(rate):
            feed.count_events(1)
        await feed.on_decisions(decisions, now=now)
        t1 = time.process_time()
        feed._next_stats = 0.0
        await feed.step(now)
        t2 = time.process_time()
        feed_cpu += t2 - t0
        stats_cpu += t2 - t1
        frames += _drain(layer, channel)
    await layer.flush()
    return {
        "events_per_second": rate,
        "feed_us_per_second": feed_cpu / seconds * 1e6,
        "stats_us": stats_cpu / seconds * 1e6,
        "frames_per_second": frames / seconds,
    }


def _decision(i: int, now: float) -> Any:
    from streaming.records import DecisionMade

    return DecisionMade(
        session_id=f"s{i}",
        site="demo",
        pause_key=f"s{i}:1",
        deadline=now,
        at=now,
        outcome=Outcome.OFFER,
        risk=0.8,
        shadow_risk=None,
        model="cart-risk@1",
        shadow_model="",
        features={"cart_value": 120.0, "views_since_add": 5.0},
        cart_value=120.0,
        reasons=[{"feature": "views_since_add", "value": 5.0, "contribution": 1.2}],
    )


def _drain(layer: Any, channel: str) -> int:
    # The in-memory layer keeps each channel's messages in a queue; empty it without waiting.
    queue = layer.channels.get(channel)
    if queue is None:
        return 0
    count = queue.qsize()
    while not queue.empty():
        queue.get_nowait()
    return int(count)


BENCHMARK = Benchmark(
    help="the dashboard's cost per second at 100, 1,000 and 5,000 events/s",
    add_arguments=add_arguments,
    run=run,
)
