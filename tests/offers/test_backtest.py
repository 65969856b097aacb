from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from offers.backtest import rules_from_file, run_backtest
from offers.models import ScoringModel
from offers.services import model_activate
from streaming.budget import day_of
from streaming.clickstream import read_otto, replay
from streaming.policy import Rule
from streaming.scoring import load_model
from tests.factories import small_model, stored_model

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
OTTO = FIXTURES / "otto" / "sessions.jsonl"


def rule(**fields: object) -> Rule:
    values: dict[str, object] = {
        "id": 1,
        "priority": 1,
        "min_risk": 0.0,
        "min_cart_value": 0.0,
        "discount_percent": 10,
        "title": "t",
        "message": "m",
        "daily_budget": 1000,
        "valid_minutes": 30,
    }
    return Rule(**(values | fields))  # type: ignore[arg-type]


def test_every_pause_is_decided_once_with_cooldown_holdout_and_budget():
    replayed = replay(read_otto(OTTO).sessions, pause_seconds=30, outcome_window=1800)
    scorer = load_model(small_model(), label="m@1")
    free = run_backtest(replayed, scorer, rules=[rule()], cooldown_seconds=0, holdout_percent=0)
    assert free.pauses == 52 and sum(free.outcomes.values()) == 52
    assert free.outcomes["offer"] == 52 and free.discount > 0
    # one offer per session within the cooldown: the others are no_offer
    sessions = {p.session_id for p in replayed.pauses}
    cooled = run_backtest(
        replayed, scorer, rules=[rule()], cooldown_seconds=86400 * 30, holdout_percent=0
    )
    assert cooled.outcomes["offer"] == len(sessions)
    # a budget of 3 a day
    tight = run_backtest(
        replayed, scorer, rules=[rule(daily_budget=3)], cooldown_seconds=0, holdout_percent=0
    )
    per_day = Counter(day_of(p.at) for p in replayed.pauses)
    assert tight.budget == {day: {1: min(3, n)} for day, n in sorted(per_day.items())}
    assert tight.outcomes["offer"] == sum(min(3, n) for n in per_day.values())
    held = run_backtest(replayed, scorer, rules=[rule()], cooldown_seconds=0, holdout_percent=100)
    assert held.outcomes["holdout"] == 52
    low, estimate, high = (free.roc_auc[k] for k in ("low", "estimate", "high"))
    assert low is not None and estimate is not None and high is not None
    assert low <= estimate <= high


def test_rules_come_from_a_json_file(tmp_path: Path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps([{"id": 7, "min_risk": 0.5, "discount_percent": 15}]))
    [loaded] = rules_from_file(path)
    assert (loaded.id, loaded.min_risk, loaded.discount_percent, loaded.daily_budget) == (
        7,
        0.5,
        15,
        1000,
    )


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read the rules file"),
        ("not json", "JSON is malformed"),
        ('{"bogus": 1}', "Expected `array`, got `object`"),
        ('[{"min_risk": 0.5}]', "missing required field `id`"),
        ('[{"id": 1, "min_risk": 1.5}]', "Expected `float` <= 1"),
        ('[{"id": 1, "min_risk": 0.5, "discount": 10}]', "unknown field `discount`"),
        ('[{"id": 1, "min_risk": 0.5, "targeting": "luck"}]', "Invalid enum value 'luck'"),
    ],
)
def test_a_bad_rules_file_is_a_clear_error(tmp_path: Path, content: str | None, said: str):
    path = tmp_path / "rules.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(said)):
        rules_from_file(path)


@pytest.mark.django_db
def test_the_command_says_what_is_wrong_with_the_rules_before_replaying(tmp_path: Path):
    rules = tmp_path / "rules.json"
    rules.write_text('[{"id": 1}]')
    absent = tmp_path / "absent.csv"  # never read: the rules are checked first
    with pytest.raises(CommandError, match=r"missing required field `min_risk`"):
        call_command("backtest", "--clickstream", str(absent), "--rules", str(rules))


@pytest.mark.django_db
def test_the_command_compares_a_model_with_the_active_one(tmp_path: Path):
    active, other = stored_model(1), stored_model(2)
    model_activate(model=active)
    ScoringModel.objects.filter(pk=other.pk).update(pause_seconds=10)  # learnt 10 s pauses
    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / "backtest.json"
    call_command(
        "backtest",
        "--clickstream",
        str(OTTO),
        "--format",
        "otto",
        "--model",
        str(other.version),
        "--json",
        str(path),
        stdout=out,
        stderr=err,
    )
    assert "20 sessions (0 rows skipped), 52 pauses" in err.getvalue()
    # the replay looks for 30 s pauses (PAUSE_SECONDS): the model of 10 s ones is said so
    assert f"{other.label} was trained on 10 s pauses" in err.getvalue()
    assert (
        "PAUSE_SECONDS=10" in err.getvalue() and f"{active.label} was trained" not in err.getvalue()
    )
    figures = json.loads(path.read_text())["models"]
    assert [m["model"] for m in figures] == [other.label, active.label]
    assert all(m["pauses"] == 52 for m in figures)
    assert other.label in out.getvalue() and "ROC-AUC" in out.getvalue()
    with pytest.raises(CommandError, match="no model"):
        call_command("backtest", "--clickstream", str(OTTO), "--format", "otto", "--model", "99")
