"""The clickstream at rest, from a real server: simulated shoppers' events written through to the
event log, and `backtest` on that log deciding the same pauses as the live worker did."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streaming.eventlog import read_log
from tests.subprocesses import ROOT, Server, manage, prepared_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIVE_DECISIONS = """
import json
from offers.models import Decision
print(json.dumps([[d.session, d.at.timestamp(), d.outcome, d.risk] for d in Decision.objects.all()]))
"""


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"no {name} in /metrics"
    return float(found.group(1))


def live_now(url: str) -> tuple[float, float]:
    """The dashboard's live sessions and carts at risk, as /metrics gives them."""
    return metric(url, "liveoffers_active_sessions"), metric(url, "liveoffers_carts_at_risk")


def test_the_log_holds_every_applied_event_and_a_backtest_of_it_decides_as_live(tmp_path: Path):
    events = tmp_path / "events"
    env, _ = prepared_env(
        tmp_path,
        PAUSE_SECONDS="1",
        EVENT_LOG=str(events),
        # a second offer to a session inside the test: cooldown and holdout as the backtest
        # reads them from the same settings
        OFFER_COOLDOWN_SECONDS="5",
    )
    server = Server(env)
    try:
        simulated = subprocess.run(
            [
                *(sys.executable, "manage.py", "simulate", "--url", server.url),
                *("--shoppers", "30", "--seconds", "10"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert simulated.returncode == 0, simulated.stdout + simulated.stderr
        ended = time.monotonic()
        # Live sessions fall to 0 within ten pauses (10 s) of the last event, and stay held.
        while live_now(server.url) != (0, 0):
            assert time.monotonic() - ended < 10 + 3, f"still live: {live_now(server.url)}"
            time.sleep(0.5)
        assert metric(server.url, "liveoffers_live_sessions") > 0
    finally:
        assert server.stop() == 0  # SIGTERM: what is queued for the log is written
    logged = list(read_log(events))
    assert logged, "nothing in the event log"
    assert all(e.site == "demo" for e in logged)
    names = {e.event.name for e in logged}
    assert {"page_view", "add_to_cart", "offer_shown"} <= names, names
    # never a token: the log holds session ids, not what the browser authenticates with
    raw = b"".join(path.read_bytes() for path in events.rglob("*.jsonl"))
    assert b"token" not in raw

    shell = manage("shell", "-v", "0", "-c", LIVE_DECISIONS, env=env)
    assert shell.returncode == 0, shell.stderr
    decided = json.loads(shell.stdout)
    assert len(decided) >= 10, "too few live decisions to compare"
    replayed_path = tmp_path / "backtest.jsonl"
    backtest = manage(
        "backtest", "--clickstream", "log", "--decisions", str(replayed_path), env=env
    )
    assert backtest.returncode == 0, backtest.stderr
    replayed = [json.loads(line) for line in replayed_path.read_text().splitlines()]

    by_session: dict[str, list[dict[str, object]]] = {}
    for decision in replayed:
        by_session.setdefault(str(decision["session"]), []).append(decision)
    same = 0
    for session, at, outcome, risk in decided:
        # The backtest's pause is at the deadline (its time to the millisecond); the live
        # decision is stamped with it, or just after on a machine busy with other tests.
        pauses = by_session.get(session, [])
        match = [d for d in pauses if -0.001 <= at - float(str(d["at"])) < 5.0]
        assert match, f"no replayed pause for {session}'s live decision at {at}: {pauses}"
        replay = match[-1]
        if replay["outcome"] == outcome and abs(float(str(replay["risk"])) - risk) <= 0.01:
            same += 1
    print(f"{same} of {len(decided)} live decisions decided alike; {len(replayed)} replayed")
    assert same >= 0.99 * len(decided), f"{same} of {len(decided)} decided alike"
    # and no pause the live worker did not see, beyond those cut off when the server stopped
    assert len(replayed) <= len(decided) + 30
