"""`bench layer`: its smallest run on the machine's Redis, and its table."""

from __future__ import annotations

import json
import math
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from benchmarks.decisions import Spread
from benchmarks.harness import Cores
from benchmarks.layer import (
    Arrivals,
    Burst,
    CapacityRun,
    Gone,
    LayerFigures,
    LayerReport,
    Ping,
    Stall,
)
from benchmarks.management.commands.bench import BENCHMARKS, NAMED_ONLY
from tests.conftest import service_missing
from tests.redis_servers import answers

# Not the bench's default (11) nor the other tests' (12, 14, 15): runs may share the machine.
REDIS_URL = "redis://127.0.0.1:6379/10"


@pytest.mark.e2e
@pytest.mark.services
def test_the_smallest_run_measures_both_layers_and_loses_nothing_uncounted(tmp_path: Path):
    if not answers(6379):
        service_missing("Redis at 127.0.0.1:6379")
    out, err = StringIO(), StringIO()
    call_command(
        "bench",
        "layer",
        f"--redis-url={REDIS_URL}",
        "--sockets=4",
        "--pings=5",
        "--senders=2",
        "--bursts=20",
        "--capacities=5",
        "--expiry=1",
        "--stall=1.5",
        f"--json={tmp_path / 'layer.json'}",
        stdout=out,
        stderr=err,
    )
    figures = json.loads((tmp_path / "layer.json").read_text())
    pubsub, core = figures["layers"]
    assert (pubsub["layer"], core["layer"]) == ("pubsub", "core")
    for layer in (pubsub, core):
        assert layer["ping"]["messages"] == 5
        (burst,) = layer["bursts"]
        assert burst["arrived"] == burst["messages"] == 20 and burst["dropped"] == 0
    (capacity,) = core["capacities"]
    # Whatever was not delivered was reported dropped: nothing is lost uncounted.
    assert capacity["burst"]["arrived"] + capacity["burst"]["dropped"] == 15
    # A front end stopped past the expiry: pubsub delivers what waited, core lost it.
    assert pubsub["stall"]["arrived"] == 4 and core["stall"]["arrived"] <= 1
    assert pubsub["gone"]["held_messages"] == 0
    assert core["gone"]["held_messages"] == 4 and 0.5 < core["gone"]["held_for"] < 3
    assert "one at a time p50/p99 ms" in out.getvalue()


def test_it_runs_only_when_named_so_that_bench_all_needs_no_services():
    assert "layer" in NAMED_ONLY and "layer" not in BENCHMARKS


def test_the_first_offer_missing_is_where_the_drops_began():
    def arrivals(numbers: set[int]) -> Arrivals:
        return Arrivals(len(numbers), Spread.of([1.0]), 0.0, 1.0, frozenset(numbers))

    assert arrivals({0, 1, 2, 4}).first_missing(5) == 3
    assert arrivals(set(range(5))).first_missing(5) is None


def test_the_table_sets_the_layers_side_by_side():
    def spread(p50: float) -> Spread:
        return Spread(p50, p50 * 2, p50 * 3, p50 * 4)

    def burst(messages: int, arrived_per_second: float, dropped: int = 0) -> Burst:
        return Burst(
            messages, 2, 5000.0, messages - dropped, arrived_per_second, spread(5), dropped, 0.2
        )

    report = LayerReport(sockets=1000, senders=2, expiry=2, cores=Cores(0, 1), redis="7.0.15")
    report.layers = [
        LayerFigures(
            "pubsub",
            Ping(300, spread(1.1), spread(0.4)),
            bursts=[burst(1000, 4000.0)],
            stall=Stall(4.0, 1000, 1000, 0),
            gone=Gone(1000, 0, 0, 0, None, 0),
        ),
        LayerFigures(
            "core",
            Ping(300, spread(2.5), spread(1.5)),
            bursts=[burst(1000, 900.0)],
            capacities=[CapacityRun(100, burst(300, 600.0, dropped=84), 156)],
            stall=Stall(4.0, 1000, 1, 0),
            gone=Gone(1000, 0, 1000, 282_640, 2.0, 86_340),
        ),
    ]
    table = report.table()
    rows = {line[:26].strip(): line[26:].split() for line in table.splitlines()}
    assert rows["one at a time p50/p99 ms"] == ["1.1", "/", "3.3", "2.5", "/", "7.5"]
    assert rows["arrived/s"] == ["4,000", "900"]
    assert "pubsub: front end gone: 1,000 sent, nothing kept in Redis" in table
    assert (
        "core: front end gone: 1,000 sent, 1,000 kept in Redis (282,640 bytes) for 2.0 s after "
        "the last, 0 reported dropped; its sockets stay in their groups 86,340 s"
    ) in table
    assert "core: capacity 100, burst of 300: first dropped after 156 sent; 84 dropped" in table
    assert math.isclose(report.as_dict()["layers"][1]["gone"]["held_for"], 2.0)
