from __future__ import annotations

import pytest

from streaming.uplift import Group, uplift


def test_the_wilson_interval_matches_a_worked_example():
    low, high = Group(100, 20).wilson()
    assert low == pytest.approx(0.1333, abs=1e-3) and high == pytest.approx(0.2888, abs=1e-3)


def test_a_clear_rise_is_called_a_rise():
    result = uplift(Group(1000, 300), Group(1000, 200))
    assert result.difference == pytest.approx(0.10)
    assert result.low is not None and result.high is not None
    assert 0.06 < result.low < 0.10 < result.high < 0.14
    assert result.verdict.startswith("Offers raise conversion by 10.0 points")


def test_overlapping_groups_get_no_verdict():
    result = uplift(Group(200, 42), Group(200, 40))
    assert result.low is not None and result.low < 0 < (result.high or 0)
    assert result.verdict.startswith("No clear difference yet")


def test_small_samples_are_too_early_to_tell_even_when_the_rates_differ():
    result = uplift(Group(12, 9), Group(8, 1))
    assert result.verdict.startswith("Too early to tell: 12 offered and 8 held-out")


def test_empty_groups_have_no_rate():
    result = uplift(Group(5, 1), Group(0, 0))
    assert result.difference is None and result.verdict == "No sessions in both groups yet."


def test_a_fall_is_called_a_fall():
    assert uplift(Group(1000, 150), Group(1000, 250)).verdict.startswith(
        "Offers lower conversion by 10.0"
    )
