"""Alerts from a real server: shifted traffic raises drift alerts naming the shifted features, at
/api/alerts/ and POSTed to a webhook receiver."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.factories import track
from tests.subprocesses import Server, manage, prepared_env
from tests.webhooks import Receiver, receiving

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A model trained on generated shoppers, with the reference of its training data that drift is
# measured against (the small model test databases start with has none).
TRAINED = (
    "from offers.training import train_model; "
    "train_model(sessions=3000, rounds=30, force=True, say=lambda line: None)"
)


@pytest.fixture
def receiver() -> Iterator[str]:
    with receiving() as url:
        yield url


def alerts(server: Server, cookie: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{server.url}/api/alerts/", headers={"Cookie": f"sessionid={cookie}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        found: list[dict[str, Any]] = json.load(response)["alerts"]
    return found


def test_shifted_traffic_raises_drift_alerts_naming_the_shifted_features(
    tmp_path: Path, receiver: str
):
    env, cookie = prepared_env(
        tmp_path, PAUSE_SECONDS="1", DRIFT_CHECK_SECONDS="5", ALERT_WEBHOOK_URL=receiver
    )
    trained = manage("shell", "-v", "0", "-c", TRAINED, env=env)
    assert trained.returncode == 0, trained.stderr
    with Server(env) as server:
        # Every cart ten times dearer than any the model learnt from, every tab hidden.
        for _ in range(70):
            with connect(f"{server.ws_url}/ws/collect/?site=demo", open_timeout=5) as ws:
                json.loads(ws.recv(timeout=5))  # welcome
                frames = [
                    track("e-1", "product_view", product_id="sku-espresso", price=2490.0),
                    track("e-2", "add_to_cart", product_id="sku-espresso", price=2490.0),
                    track("e-3", "visibility", state="hidden"),
                ]
                for frame in frames:
                    ws.send(json.dumps(frame))
                    assert json.loads(ws.recv(timeout=5))["type"] == "ack"
        deadline = time.monotonic() + 60
        drifted: set[str] = set()
        while time.monotonic() < deadline:
            drifted = {
                a["subject"]
                for a in alerts(server, cookie)
                if a["kind"] == "drift" and a["resolved_at"] is None
            }
            if {"feature:cart_value", "feature:hidden"} <= drifted:
                break
            time.sleep(1)
        assert {"feature:cart_value", "feature:hidden"} <= drifted, drifted
        for _ in range(50):
            if any(r["subject"] == "feature:cart_value" for r in Receiver.received):
                break
            time.sleep(0.1)
    posted = {r["subject"]: r for r in Receiver.received if r["kind"] == "drift"}
    assert posted["feature:cart_value"]["change"] == "raised"
    assert posted["feature:cart_value"]["text"].startswith("[Live Offers] Warning: cart_value")
