from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from benchmarks import Benchmark, decisions, detector, scoring
from benchmarks.harness import Cores
from benchmarks.management.commands import bench
from benchmarks.management.commands.bench import BENCHMARKS, defaults
from streaming import generator


def test_the_detector_finds_exactly_the_due_sessions_and_times_each_tick():
    figures = detector.measure(1_000, seconds=0.05)
    by_case = {(f.due_per_tick, f.method): f for f in figures}
    assert set(by_case) == {(0, "heap"), (0, "scan"), (10, "heap"), (10, "scan")}
    assert all(f.sessions == 1_000 and f.ticks > 0 and f.us_per_tick > 0 for f in figures)
    assert by_case[(10, "heap")].us_per_due == by_case[(10, "heap")].us_per_tick / 10
    assert by_case[(0, "heap")].us_per_due is None
    # Finding nothing due without looking at every session is the point of the heap.
    assert by_case[(0, "heap")].us_per_tick < by_case[(0, "scan")].us_per_tick


def test_the_detector_table_gives_heap_and_scan_side_by_side():
    report = detector.DetectorReport(seconds=1.0)
    report.figures = [
        detector.TickFigures(100_000, "heap", 1_000, 100, 1_250.0),
        detector.TickFigures(100_000, "scan", 1_000, 50, 10_000.0),
    ]
    (row,) = [line.split() for line in report.table().splitlines() if line.startswith("100,000")]
    assert row == ["100,000", "1,000", "1,250", "1.25", "10,000", "10.00", "8x"]
    assert report.as_dict()["ticks"][0]["us_per_due"] == 1.25


@pytest.fixture(scope="module")
def tiny_workload() -> scoring.Workload:
    """A 5-tree model on a few hundred generated sessions, and 20 shoppers at their pause."""
    return scoring.prepare(shoppers=20, sessions=300, rounds=5)


def test_the_shoppers_are_paused_at_the_deadline_with_a_cart(tiny_workload):
    assert len(tiny_workload.states) == 20
    for state in tiny_workload.states:
        assert state.cart
        deadline = state.pause_deadline(generator.PAUSE_SECONDS)
        assert deadline == pytest.approx(scoring.DEADLINE)
        assert deadline <= scoring.NOW


def test_scoring_measures_every_part_of_a_decision(tiny_workload):
    figures = scoring.measure_batch(tiny_workload, 10, seconds=0.01)
    parts = (
        figures.bare_us,
        figures.features_us,
        figures.model_us,
        figures.policy_us,
        figures.project_us,
        figures.decider_us,
    )
    assert all(0 < us < 100_000 for us in parts)
    assert figures.ratio == figures.project_us / figures.bare_us
    # Every decider step decided its whole batch: whole fills of 20 shoppers.
    assert sum(figures.outcomes.values()) % 20 == 0
    assert set(figures.outcomes) <= {"offer", "holdout", "no_offer"}
    assert scoring.measure_reasons(tiny_workload, 5, seconds=0.01) > 0


def test_scoring_measures_the_uplift_model_beside_the_risk_model(tiny_workload):
    workload = scoring.with_uplift(tiny_workload, sessions=600)
    figures = scoring.measure_batch(workload, 10, seconds=0.01)
    assert 0 < figures.uplift_us < figures.with_uplift_us < 100_000
    assert figures.with_uplift_ratio == figures.with_uplift_us / figures.bare_us
    report = scoring.ScoringReport(0.01, workload.model, 20, [figures])
    assert "with uplift" in report.table()
    assert report.as_dict()["batches"][0]["with_uplift/bare"] == figures.with_uplift_ratio


def test_percentiles_are_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert decisions.percentile(values, 0.5) == 50.0
    assert decisions.percentile(values, 0.99) == 99.0
    assert decisions.percentile([3.0], 0.99) == 3.0
    assert math.isnan(decisions.percentile([], 0.5))


def test_the_server_side_delay_is_the_difference_of_two_scrapes():
    def scrape(counts: tuple[int, int, int], total: float) -> str:
        lines = [
            f'liveoffers_decision_delay_seconds_bucket{{le="{le}"}} {n}.0'
            for le, n in zip(("0.01", "0.05", "+Inf"), counts, strict=True)
        ]
        return "\n".join(
            [
                "# TYPE liveoffers_decision_delay_seconds histogram",
                *lines,
                f"liveoffers_decision_delay_seconds_count {counts[-1]}.0",
                f"liveoffers_decision_delay_seconds_sum {total}",
            ]
        )

    before = decisions.delay_histogram(scrape((5, 5, 5), 0.02))
    after = decisions.delay_histogram(scrape((55, 104, 105), 2.02))
    delay = decisions.server_delay(before, after)
    assert delay.count == 100
    assert delay.mean_ms == pytest.approx(20.0)
    assert delay.within == {10.0: 0.5, 50.0: 0.99}
    assert delay.p99_bound_ms() == 50.0


async def test_every_cart_gets_one_offer_from_the_timer_floor_after_its_deadline():
    server = await decisions.start_timer("127.0.0.1", 0, pause=0.2)
    try:
        port = server.sockets[0].getsockname()[1]
        figures = await decisions.run_client(
            f"ws://127.0.0.1:{port}/ws/collect/?site=demo", carts=20, window=0.05
        )
    finally:
        server.close()
        await server.wait_closed()
    measured = decisions.measured_round("timer", figures)
    assert measured.exactly_one_each
    assert measured.pause_seconds == 0.2
    # The server arms its timer after the send and before the ack: the two bound the latency.
    assert measured.from_ack.p50 <= measured.from_send.p50
    assert all(ms >= 0 for ms in figures["from_send_ms"])
    assert measured.from_send.max < 1_000


def test_the_decisions_table_compares_the_project_with_the_floor():
    spread = decisions.Spread(1.0, 2.0, 4.0, 5.0)
    report = decisions.DecisionsReport(pause_seconds=1.0, window=0.5, cores=Cores(0, 1))
    for server, late in (("timer", spread), ("project", decisions.Spread(5.0, 10.0, 20.0, 30.0))):
        report.rounds.append(
            decisions.Round(
                server, 200, 1.0, 200, 200, 200, late, spread, spread, 500.0, spread, 0.1
            )
        )
    rows = {line.split()[0]: line.split() for line in report.table().splitlines()[2:4]}
    assert rows["project"][:10] == [
        "project",
        "200",
        "200",
        "200",
        "5.0",
        "10.0",
        "20.0",
        "30.0",
        "5.0x",
        "1.0",
    ]
    assert "project daphne" not in report.table()  # only the servers measured
    report.rounds.append(
        decisions.Round(
            "project-daphne", 200, 1.0, 200, 200, 200, spread, spread, spread, 500.0, spread, 0.1
        )
    )
    daphne_row = report.table().splitlines()[4]
    assert daphne_row.split()[:3] == ["project", "daphne", "200"]
    assert daphne_row.split()[9] == "1.0x"
    flooded = decisions.Round(
        "project-flood", 200, 1.0, 200, 200, 200, late, spread, spread, 500.0, spread, 0.1
    )
    report.flood_sockets = 8
    report.rounds.append(dataclasses.replace(flooded, flood_events_per_second=12_345.0))
    table = report.table()
    assert table.splitlines()[5].split()[:2] == ["project+flood", "200"]
    assert "while 8 more sockets send" in table and "(12,345 events/s acknowledged" in table
    assert report.as_dict()["rounds"][-1]["flood_events_per_second"] == 12_345.0


def test_bench_all_runs_every_benchmark_with_its_defaults():
    assert set(BENCHMARKS) == {"ingest", "decisions", "scoring", "detector", "dashboard"}
    assert defaults(BENCHMARKS["detector"]) == {"sessions": [1_000, 100_000], "seconds": 1.0}
    assert defaults(BENCHMARKS["decisions"])["carts"] == [200, 2000]
    assert defaults(BENCHMARKS["scoring"])["batches"] == [1, 1000]


class _Figures:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options

    def table(self) -> str:
        return f"table with {self.options['count']}"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.options)


def _fake(count: int) -> Benchmark:
    def add_arguments(parser):
        parser.add_argument("--count", type=int, default=count)

    return Benchmark(
        help="fake", add_arguments=add_arguments, run=lambda options, _progress: _Figures(options)
    )


def test_bench_all_prints_every_table_and_writes_every_benchmark_s_figures(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "BENCHMARKS", {"one": _fake(1), "two": _fake(2)})
    out, err = StringIO(), StringIO()
    call_command("bench", "all", "--json", str(tmp_path / "all.json"), stdout=out, stderr=err)
    assert out.getvalue().split("\n\n") == ["table with 1", "table with 2\n"]
    assert json.loads((tmp_path / "all.json").read_text()) == {
        "one": {"count": 1},
        "two": {"count": 2},
    }
    assert "bench all: figures written to" in err.getvalue()


def test_the_dashboard_benchmark_measures_each_rate_with_and_without_sampling():
    import asyncio

    from benchmarks.dashboard import measure

    sampled = asyncio.run(measure(2_500, 2, sampled=True))
    unsampled = asyncio.run(measure(2_500, 2, sampled=False))
    assert sampled["feed_us_per_second"] > 0 and sampled["stats_us"] > 0
    # 62 decisions a second: the sampled feed sends 50 of them, plus one stats frame.
    assert sampled["frames_per_second"] == 51
    assert unsampled["frames_per_second"] == 63


def test_a_round_s_record_is_read_from_sqlite_while_the_round_runs(tmp_path):
    import sqlite3

    path = tmp_path / "bench.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE offers_decision (id INTEGER PRIMARY KEY, pause_key TEXT, outcome TEXT, "
            "at TEXT)"
        )
        db.execute("CREATE TABLE offers_offer (id INTEGER PRIMARY KEY, decision_id INTEGER)")
        db.execute(
            "INSERT INTO offers_decision VALUES (1, 'warm:1', 'offer', '2026-01-01 00:00:00')"
        )
    url = f"sqlite:///{path}"
    spread = decisions.Spread(1.0, 1.0, 1.0, 1.0)

    def run_client() -> decisions.Round:
        # Three decisions over 0.5 s, as the server writes them (UTC, as text).
        with sqlite3.connect(path) as db:
            for number, at in enumerate(("00:00:10", "00:00:10.25", "00:00:10.5"), 2):
                db.execute(
                    "INSERT INTO offers_decision VALUES (?, ?, 'offer', ?)",
                    (number, f"s-{number}:1", f"2026-01-01 {at}"),
                )
                db.execute("INSERT INTO offers_offer (decision_id) VALUES (?)", (number,))
        return decisions.Round("project", 3, 1.0, 3, 3, 3, spread, spread, spread, 0.0, spread, 0)

    _, recorded = decisions.decided_round(database_url=url, run_client=run_client, expected=3)
    assert (recorded.decisions, recorded.pause_keys, recorded.offers, recorded.offer_rows) == (
        3,
        3,
        3,
        3,
    )
    assert recorded.decided_over == pytest.approx(0.5)
    assert recorded.decided_per_second == pytest.approx(6.0)
    # All in when the poll found them: long after 2026-01-01 in these tests' time.
    assert recorded.after_last == pytest.approx(recorded.recorded_after - 0.5)
    assert decisions.last_decision_id(url) == 4


def test_the_decisions_table_says_how_soon_the_project_s_decisions_were_recorded():
    spread = decisions.Spread(1.0, 2.0, 4.0, 5.0)
    report = decisions.DecisionsReport(pause_seconds=1.0, window=0.5, cores=Cores(0, 1))
    for server in ("timer", "project"):
        report.rounds.append(
            decisions.Round(
                server,
                2_000,
                1.0,
                2_000,
                2_000,
                2_000,
                spread,
                spread,
                spread,
                500.0,
                spread,
                0.1,
                recorded=(
                    decisions.Recorded(2_000, 2_000, 2_000, 2_000, 0.5, 2.0)
                    if server == "project"
                    else None
                ),
            )
        )
    lines = report.table().splitlines()
    (row,) = [line.split() for line in lines if line.startswith("project ") and "4,000" in line]
    # decided/s over 0.5 s, recorded/s over 2 s, all 2 s after the first, 1.5 s after the last
    assert row == ["project", "2,000", "4,000", "1,000", "2.00", "s", "1.50", "s"]
    recorded = report.as_dict()["rounds"][1]["recorded"]
    assert recorded["per_second"] == 1_000.0 and recorded["after_last"] == 1.5
    assert report.as_dict()["rounds"][0]["recorded"] is None
