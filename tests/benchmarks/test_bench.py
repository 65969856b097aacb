from __future__ import annotations

import pytest

from benchmarks import bare
from benchmarks.clients import load
from benchmarks.harness import Cores
from benchmarks.ingest import IngestReport, Measurement
from benchmarks.memory import measure_memory


@pytest.mark.slow
def test_a_live_session_holds_well_under_four_kib():
    figures = measure_memory(2_000)
    assert figures.events_per_session >= 15
    assert 0 < figures.bytes_per_session < 4_096
    assert figures.sessions_per_gib > 250_000


@pytest.mark.slow
async def test_the_load_client_counts_every_id_the_bare_server_acknowledges():
    server = await bare.start("127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        figures = await load.run_load(
            [f"ws://127.0.0.1:{port}/ws/collect/?site=demo"],
            events_per_frame=20,
            connections=2,
            warmup=0.1,
            seconds=0.4,
        )
    finally:
        server.close()
        await server.wait_closed()
    assert figures.events > 0
    assert figures.events % 20 == 0  # whole batches, one ack each
    assert figures.client_cpu_seconds > 0


def test_the_table_gives_the_collector_against_both_baselines():
    report = IngestReport(connections=8, seconds=5, cores=Cores(0, 1))
    rates = {
        "bare": 40_000.0,
        "floor": 5_000.0,
        "collector": 10_000.0,
        "collector-daphne": 20_000.0,
        "collector-nolog": 12_500.0,
    }
    for server, rate in rates.items():
        for frames, factor in (("single", 1), ("batch of 20", 10)):
            report.measurements.append(Measurement(server, frames, rate * factor, 1.0, 0.5))
    table = report.table()
    assert "server on core 0, client on core 1" in table
    singles = [line.split() for line in table.splitlines() if line.startswith("single")]
    assert singles[0] == ["single", "40,000", "5,000", "10,000", "2.00x", "0.25x"]
    assert singles[1] == ["single", "20,000", "4.00x", "0.50x"]
    assert singles[2] == ["single", "12,500", "2.50x", "0.31x"]
    assert singles[3] == ["single", *["100%", "/", "50%"] * 5]
    assert "event log on / off, single: 0.80x (one run each)" in table
    # pairs run side by side: the median is the figure, the main runs' pair left out
    for on, off in ((8_000.0, 10_000.0), (9_000.0, 10_000.0), (11_000.0, 10_000.0)):
        report.log_runs.append(Measurement("collector", "single", on, 1.0, 0.5))
        report.log_runs.append(Measurement("collector-nolog", "single", off, 1.0, 0.5))
        for server, rate in (("collector", on), ("collector-nolog", off)):
            report.log_runs.append(Measurement(server, "batch of 20", rate * 10, 1.0, 0.5))
    said = "event log on / off, single: 0.90x (side by side on one core, median of 3: 0.80x, 0.90x, 1.10x)"
    assert said in report.table()
    assert report.as_dict()["event_log_on_off"]["single"] == pytest.approx([0.8, 0.9, 1.1])
    ratios = report.as_dict()["ratios"]
    assert ratios["collector"]["batch of 20"]["collector/floor"] == 2.0
