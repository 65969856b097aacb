"""`bench realdata` without the REES46 sample (it is not shipped): it says so and measures nothing;
with a sample in REES46's shape, it measures both models on the odd half; and a clickstream
replayed through a live server, as `--live` replays the sample, pauses where the replay on a
simulated clock does."""

from __future__ import annotations

import asyncio
import json
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from benchmarks.clients.replay import replay_live
from benchmarks.realdata import LATER_IN_THE_SESSION, Recorded, bought_after, recorded_decisions
from streaming.clickstream import read_events_csv, replay
from streaming.features import FEATURE_NAMES
from streaming.generator import generate_sessions
from tests.subprocesses import Server, prepared_env


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


# --- through a live server ----------------------------------------------------------------------

CLICKS = """session,time,event,product,price
bought,2026-01-01T00:00:00.0Z,product_view,p1,20
bought,2026-01-01T00:00:00.3Z,add_to_cart,p1,20
bought,2026-01-01T00:00:02.0Z,product_view,p2,5
bought,2026-01-01T00:00:02.3Z,add_to_cart,p2,5
bought,2026-01-01T00:00:02.6Z,purchase,,25
left,2026-01-01T00:00:00.0Z,product_view,p3,40
left,2026-01-01T00:00:00.2Z,add_to_cart,p3,40
looked,2026-01-01T00:00:00.0Z,product_view,p4,9
looked,2026-01-01T00:00:00.5Z,product_view,p5,9
"""


def decisions_once(database: Path, count: int, timeout: float = 10) -> list[Recorded]:
    deadline = time.monotonic() + timeout
    while len(found := recorded_decisions(database)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


@pytest.mark.e2e
def test_a_clickstream_replayed_live_pauses_where_its_gaps_are_with_the_replays_features(
    tmp_path: Path,
):
    csv_path = tmp_path / "clicks.csv"
    csv_path.write_text(CLICKS)
    sessions = read_events_csv(csv_path).sessions
    env, _ = prepared_env(tmp_path, PAUSE_SECONDS="1")
    with Server(env) as server:
        replayed = asyncio.run(
            replay_live(
                sessions, server.url, site="demo", pause_seconds=1.0, progress=print, margin=1.0
            )
        )
        decided = decisions_once(tmp_path / "db.sqlite3", 2)
    assert all(r.acked == r.sent == len(r.session.events) and not r.refused for r in replayed)
    by_server = {r.server_session: r for r in replayed}
    live = {by_server[d.session].session.session_id: d for d in decided}
    # "bought" paused between its adds and bought after; "left" paused at its end with a full
    # cart; "looked" never had a cart. One decision a pause, no more.
    assert sorted(live) == ["bought", "left"] and len(decided) == 2
    bought, left = by_server[live["bought"].session], by_server[live["left"].session]
    assert bought_after(bought.session, bought.recorded_time(live["bought"].at))
    assert not bought_after(left.session, left.recorded_time(live["left"].at))
    # The replay on a simulated clock, at the moments the live run sent the events, finds the
    # same pauses with the features the server computed (its clock ticks: times within 0.5 s).
    moved = [r.as_sent() for r in replayed]
    simulated = replay(moved, pause_seconds=1.0, outcome_window=LATER_IN_THE_SESSION)
    assert [p.session_id for p in simulated.pauses] == ["bought", "left"]
    for pause, row in zip(simulated.pauses, simulated.X, strict=True):
        recorded = live[pause.session_id]
        assert recorded.risk is not None and 0 <= recorded.risk <= 1
        for name, value in zip(FEATURE_NAMES, row.tolist(), strict=True):
            tolerance = 0.5 if name in ("seconds_since_add", "session_seconds") else 1e-3
            assert recorded.features[name] == pytest.approx(value, abs=tolerance), name
    assert live["bought"].features["cart_value"] == 20 and live["left"].features["adds"] == 1
