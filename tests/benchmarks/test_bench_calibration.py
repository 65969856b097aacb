"""`bench calibration`: the generator beside the shipped UCI table, and beside the even half of a
REES46 sample when given one."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

from django.core.management import call_command

from tests.benchmarks.test_bench_realdata import rees46_shaped


def test_without_the_sample_it_measures_the_rest_and_says_where_to_give_it(tmp_path: Path):
    out, err = StringIO(), StringIO()
    absent = tmp_path / "absent.csv"
    call_command(
        "bench", "calibration", f"--rees46={absent}", "--sessions=300", stdout=out, stderr=err
    )
    assert "UCI Online Shoppers" in out.getvalue() and "generator" in out.getvalue()
    assert f"skipped: no REES46 sample at {absent}" in out.getvalue()
    assert "generated 300/300" in err.getvalue()


def test_with_a_sample_it_measures_its_even_half_beside_the_others(tmp_path: Path):
    call_command(
        "bench",
        "calibration",
        f"--rees46={rees46_shaped(tmp_path / 'sample.csv', sessions=200)}",
        "--sessions=300",
        f"--json={tmp_path / 'calibration.json'}",
        stdout=StringIO(),
        stderr=StringIO(),
    )
    figures = json.loads((tmp_path / "calibration.json").read_text())
    assert figures["skipped"] == []
    sample = figures["sources"]["REES46 sample, even user_id"]
    assert 0 < sample["sessions"] <= 100  # of users 0, 2, ... 198
    assert 0 < sample["carted"] <= 1
    assert {t["statistic"] for t in figures["targets"]} >= {"gap_seconds", "left_browsing_on"}
