"""`bench realdata` without the REES46 sample (it is not shipped): it says so and measures nothing;
with a sample in REES46's shape, it measures both models on the odd half."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

from django.core.management import call_command

from streaming.generator import generate_sessions


def test_without_the_sample_it_says_where_to_give_it(tmp_path: Path):
    out, err = StringIO(), StringIO()
    call_command("bench", "realdata", f"--rees46={tmp_path / 'absent.csv'}", stdout=out, stderr=err)
    assert "skipped: no REES46 sample at" in out.getvalue()
    assert "--rees46 PATH" in out.getvalue()


def rees46_shaped(path: Path, sessions: int = 600) -> Path:
    """Generated shoppers written as REES46 rows (view, cart, purchase), users alternating."""
    rows = [
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
    ]
    kinds = {"product_view": "view", "add_to_cart": "cart", "purchase": "purchase"}
    for n, session in enumerate(generate_sessions(sessions, seed=3)):
        for generated in session.events:
            kind = kinds.get(str(generated.frame["event"]))
            props = generated.frame["props"]
            if kind is None or not isinstance(props, dict):
                continue
            second = 1_570_000_000 + n * 600 + int(generated.at)
            stamp = f"2019-10-{1 + second // 86400 % 28:02d} {second // 3600 % 24:02d}:"
            stamp += f"{second // 60 % 60:02d}:{second % 60:02d} UTC"
            price = props.get("price", props.get("total", 1.0))
            rows.append(f"{stamp},{kind},{props.get('product_id', 'p')},1,,b,{price},{n},s{n}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_with_a_sample_it_judges_both_models_on_the_odd_half(tmp_path: Path):
    out = StringIO()
    call_command(
        "bench",
        "realdata",
        f"--rees46={rees46_shaped(tmp_path / 'sample.csv')}",
        "--sessions=500",
        f"--json={tmp_path / 'realdata.json'}",
        stdout=out,
        stderr=StringIO(),
    )
    figures = json.loads((tmp_path / "realdata.json").read_text())
    assert figures["pauses"]["odd"] > 20 and figures["pauses"]["even"] > 20
    models = {m["model"].split(" ")[0]: m for m in figures["models"]}
    assert set(models) == {"default", "clickstream"}
    for model in models.values():
        roc = model["roc_auc"]
        assert roc["low"] <= roc["estimate"] <= roc["high"]
    assert "ROC-AUC (95% CI)" in out.getvalue()
