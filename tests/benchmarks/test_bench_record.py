"""`bench record`: its journals, its smallest runs on SQLite and PostgreSQL, and its table."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from benchmarks import record
from benchmarks.management.commands.bench import BENCHMARKS, NAMED_ONLY
from streaming.features import FEATURE_NAMES
from streaming.records import DecisionMade, MarkMade, ReasonsMade, decode, encode
from tests.conftest import service_missing

RULES = [record.Rule(1, 15, "15% off", "Take 15% off"), record.Rule(2, 10, "10% off", "10% off")]


def made(count: int, *, offers_percent: float = 30.0) -> list[DecisionMade]:
    return record.decisions(
        count, offers_percent=offers_percent, rules=RULES, seed=7, start=1_764_000_000.0
    )


def test_the_decisions_are_the_worker_s_kind_with_a_share_of_offers():
    decisions = made(2_000)
    outcomes = [str(d.outcome) for d in decisions]
    assert 0.25 < outcomes.count("offer") / 2_000 < 0.35
    assert 0 < outcomes.count("holdout") < outcomes.count("offer") / 5
    assert len({d.pause_key for d in decisions}) == len({d.session_id for d in decisions}) == 2_000
    for d in decisions:
        assert list(d.features) == list(FEATURE_NAMES)
        assert (d.offer is not None) == (d.outcome == "offer")
        assert bool(d.reasons) == (d.outcome != "no_offer")
        assert decode(encode(d)) == d  # what the journal carries


def test_the_worker_s_pattern_journals_each_step_s_reasons_after_the_next_step_s_decisions():
    decisions = made(250)
    records = record.reasons_after(decisions)
    position = {
        (type(r).__name__, r.pause_key): n
        for n, r in enumerate(records)
        if isinstance(r, DecisionMade | ReasonsMade)
    }
    explained = [d for d in decisions if d.reasons]
    assert len(records) == 250 + len(explained)
    assert all(not r.reasons for r in records if isinstance(r, DecisionMade))
    for number, d in enumerate(decisions):
        if d.reasons:
            reasons_at = position[("ReasonsMade", d.pause_key)]
            # after its own decision and after the next step's decisions, before the one after
            next_step = min(len(decisions), (number // record.STEP + 2) * record.STEP) - 1
            assert position[("DecisionMade", decisions[next_step].pause_key)] < reasons_at
    # The journaled decisions are copies: the decisions themselves keep their reasons.
    assert all(d.reasons for d in explained)


def test_marks_are_a_sighting_and_a_purchase_for_every_other_offer():
    decisions = made(400)
    marks = record.marks(decisions)
    offers = [d for d in decisions if d.offer is not None]
    assert len(marks) == 2 * len(offers[::2])
    kinds = [m.kind for m in marks if isinstance(m, MarkMade)]
    assert len(kinds) == len(marks) and set(kinds) == {"offer_shown", "purchase"}
    shown = [m.offer_id for m in marks if isinstance(m, MarkMade) and m.kind == "offer_shown"]
    assert shown == [d.offer.offer_id for d in offers[::2] if d.offer is not None]


def test_it_runs_only_when_named_so_that_bench_all_needs_no_services():
    assert "record" in NAMED_ONLY
    assert "record" not in BENCHMARKS


def test_the_table_gives_each_database_and_workload_its_rate():
    report = record.RecordReport(
        records=20_000,
        offers_percent=30.0,
        batch_size=2_000,
        placement="the recorder on core 0, the database not pinned",
        services={"sqlite": "SQLite 3.40.1"},
    )
    report.drained = [
        record.Drained("sqlite", "inline", 20_000, 20_000, 5.0, 4.0, [500.0, 400.0, 600.0]),
        record.Drained("sqlite", "marks", 6_000, 0, 12.0, 6.0, [4_000.0]),
    ]
    lines = report.table().splitlines()
    assert "20,000 decisions, 30% offers and 3% holdouts" in lines[0]
    rows = {line.split()[1]: line.split() for line in lines[2:4]}
    # records, decisions, seconds, records/s, decisions/s, per CPU s, batch p50, max, recorder
    assert rows["inline"][2:] == [
        "20,000",
        "20,000",
        "5.00",
        "4,000",
        "4,000",
        "5,000",
        "500",
        "600",
        "80%",
    ]
    assert rows["marks"][2:] == [
        "6,000",
        "-",
        "12.00",
        "500",
        "-",
        "1,000",
        "4,000",
        "4,000",
        "50%",
    ]
    figures = report.as_dict()["drained"]
    assert figures[0]["records_per_second"] == 4_000.0
    assert figures[1]["decisions_per_second"] is None


def check_figures(figures: dict[str, Any], database: str, records: int) -> None:
    drained = [d for d in figures["drained"] if d["database"] == database]
    assert [d["workload"] for d in drained] == ["inline", "reasons after", "marks"]
    inline, after, marks = drained
    assert inline["records"] == inline["decisions"] == records
    assert after["decisions"] == records < after["records"]  # its reasons, as records of their own
    assert marks["decisions"] == 0 < marks["records"]
    for each in drained:
        assert each["records_per_second"] > 0 and each["cpu_seconds"] > 0
        # whole batches of the recorder, the last one partial
        assert len(each["batch_ms"]) == -(-each["records"] // figures["batch_size"])


@pytest.mark.slow
def test_the_smallest_run_writes_every_record_to_sqlite(tmp_path):
    out, err = StringIO(), StringIO()
    call_command(
        "bench",
        "record",
        "--records=300",
        "--database=sqlite",
        f"--json={tmp_path / 'record.json'}",
        stdout=out,
        stderr=err,
    )
    figures = json.loads((tmp_path / "record.json").read_text())
    assert figures["records"] == 300 and figures["batch_size"] == 2_000
    check_figures(figures, "sqlite", 300)
    assert out.getvalue().startswith("record (Recorder.step, batches of 2,000")
    assert "bench record: sqlite, marks: " in err.getvalue()


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.services
def test_the_smallest_run_on_postgresql_leaves_no_database_behind(tmp_path):
    if not answers(5432):
        service_missing("PostgreSQL at 127.0.0.1:5432")
    err = StringIO()
    call_command(
        "bench",
        "record",
        "--records=300",
        "--database=postgres",
        f"--json={tmp_path / 'record.json'}",
        stdout=StringIO(),
        stderr=err,
    )
    check_figures(json.loads((tmp_path / "record.json").read_text()), "postgres", 300)
    (created,) = re.findall(r"the database (liveoffers_bench_\w+) ", err.getvalue())
    listed = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SELECT datname FROM pg_database"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert created not in listed.stdout.split()
