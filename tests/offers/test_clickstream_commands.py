"""Training and evaluating on a clickstream at rest: a shop's own history as a CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from offers.models import ScoringModel
from streaming.generator import generate_sessions

pytestmark = pytest.mark.django_db

START = 1_796_000_000.0


def history(path: Path, sessions: int = 400) -> Path:
    """Generated shoppers written as a shop's own history: session,time,event,product,price."""
    with path.open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["session", "time", "event", "product", "price"])
        for n, session in enumerate(generate_sessions(sessions, seed=2)):
            for generated in session.events:
                name, props = generated.frame["event"], generated.frame["props"]
                assert isinstance(props, dict)
                if name not in ("product_view", "add_to_cart", "remove_from_cart", "purchase"):
                    continue
                product = props.get("product_id", "")
                price = props.get("price", props.get("total", ""))
                out.writerow([f"s{n}", START + n * 60 + generated.at, name, product, price])
    return path


def test_train_model_learns_from_real_pauses_with_a_time_split(tmp_path: Path, settings):
    settings.PAUSE_SECONDS = 30
    out = io.StringIO()
    call_command(
        "train_model",
        "--clickstream",
        str(history(tmp_path / "history.csv", sessions=1000)),
        "--rounds",
        "20",
        stdout=out,
        stderr=io.StringIO(),
    )
    model = ScoringModel.objects.get()
    assert model.notes.startswith("trained on ") and "real pauses of" in model.notes
    assert model.metrics["auc"] > 0.6  # the generated shoppers' pauses are learnable
    assert model.pause_seconds == 30

    result = io.StringIO()
    call_command(
        "evaluate_models",
        model.label,
        "--clickstream",
        str(tmp_path / "history.csv"),
        "--json",
        "-",
        stdout=result,
    )
    [figures] = json.loads(result.getvalue())["models"]
    assert figures["model"] == model.label and figures["n"] > 100
    assert figures["roc_auc"] > 0.6


def test_a_clickstream_with_one_outcome_only_is_refused(tmp_path: Path):
    path = tmp_path / "one.csv"
    path.write_text(
        "session,time,event,product,price\ns1,1000,add_to_cart,p,5\ns2,1000,add_to_cart,p,5\n"
    )
    with pytest.raises(CommandError, match="nothing to learn from"):
        call_command("train_model", "--clickstream", str(path), stderr=io.StringIO())
