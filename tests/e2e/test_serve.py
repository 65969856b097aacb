"""A real `manage.py serve` process on a free port, driven by a real WebSocket client."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.factories import track
from tests.subprocesses import Server, manage, project_env

pytestmark = pytest.mark.e2e

STRICT_SITE = (
    "from offers.models import Site; Site.objects.get_or_create(key='strict', "
    "defaults={'name': 'Strict', 'allowed_origins': 'https://shop.example'})"
)


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp: Path = tmp_path_factory.mktemp("serve")
    env = project_env(DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3", LIVEOFFERS_TEST_DIR=str(tmp))
    for command in (
        ["migrate", "--noinput"],
        ["bootstrap_demo"],
        ["shell", "-v", "0", "-c", STRICT_SITE],
    ):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stderr
    return env


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def server(request: pytest.FixtureRequest, server_env: dict[str, str]) -> Iterator[Server]:
    """The same behaviour whichever ASGI server `serve --server` runs."""
    running = Server(server_env, "--server", request.param)
    yield running
    running.stop()


def shopper(
    server: Server, query: str = "site=demo", origin: str | None = None
) -> ClientConnection:
    headers = {"Origin": origin} if origin else None
    return connect(
        f"{server.ws_url}/ws/collect/?{query}", additional_headers=headers, open_timeout=5
    )


def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return frame


def send(ws: ClientConnection, frame: Any) -> dict[str, Any]:
    ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    return receive(ws)


def test_it_serves_health_the_shop_and_metrics(server: Server):
    with urllib.request.urlopen(f"{server.url}/healthz") as response:
        assert response.status == 200
        assert json.load(response)["database"] == "ok"
    with urllib.request.urlopen(f"{server.url}/") as response:
        assert b"Espresso machine" in response.read()
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        assert b"liveoffers_events_received_total" in response.read()


def test_a_shopper_is_welcomed_and_every_valid_event_acknowledged(server: Server):
    with shopper(server) as ws:
        welcome = receive(ws)
        assert welcome["type"] == "welcome" and welcome["session"] and welcome["token"]
        assert welcome["pause_seconds"] == 30.0
        frames = [
            track("e-1", "page_view", url="/", page_type="home"),
            track("e-2", "search", query="espresso"),
            track("e-3", "product_view", product_id="sku-espresso", price=249, category="Kitchen"),
            track("e-4", "add_to_cart", product_id="sku-espresso", price=249, quantity=1),
            track("e-5", "remove_from_cart", product_id="sku-espresso", quantity=1),
            track("e-6", "visibility", state="hidden"),
            track("e-7", "heartbeat"),
            track("e-8", "offer_shown", offer_id="o-1"),
            track("e-9", "offer_accepted", offer_id="o-1"),
            track("e-10", "offer_dismissed", offer_id="o-1"),
            track("e-11", "checkout_start"),
            track("e-12", "purchase", order_id="A-1", total=249),
        ]
        for frame in frames:
            assert send(ws, frame) == {"type": "ack", "ids": [frame["id"]]}
        batch = {
            "type": "batch",
            "events": [{"id": f"b-{i}", "event": "heartbeat"} for i in range(20)],
        }
        assert send(ws, batch) == {"type": "ack", "ids": [f"b-{i}" for i in range(20)]}


def test_a_repeated_id_is_acknowledged_and_applied_once(server: Server):
    add = track("e-1", "add_to_cart", product_id="sku-mug", price=14, quantity=1)
    with shopper(server) as ws:
        welcome = receive(ws)
        assert send(ws, add)["ids"] == ["e-1"]
        assert send(ws, add)["ids"] == ["e-1"]
    # The same session resumed: the id is still known, so the cart holds one mug.
    with shopper(server, f"site=demo&token={welcome['token']}") as ws:
        assert receive(ws)["session"] == welcome["session"]
        assert send(ws, add)["ids"] == ["e-1"]
    before = _metric(server, "liveoffers_events_duplicate_total")
    assert before >= 2


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{]", "bad_json"),
        (json.dumps({"type": "track", "id": "", "event": "heartbeat"}), "bad_frame"),
        (json.dumps(track("e-1", "teleport")), "unknown_event"),
        (json.dumps(track("e-1", "product_view", product_id="a", price=1e308 * 10)), "bad_json"),
        (
            '{"type":"track","id":"e-1","event":"product_view","props":{"product_id":"a","price":1e999}}',
            "invalid_props",
        ),
        (json.dumps(track("e-1", "search", query="q", sort="price")), "invalid_props"),
    ],
)
def test_each_bad_frame_gets_its_error_and_the_socket_stays_open(server: Server, frame, code):
    with shopper(server) as ws:
        receive(ws)
        error = send(ws, frame)
        assert error["type"] == "error" and error["code"] == code, error
        assert send(ws, track("ok", "heartbeat")) == {"type": "ack", "ids": ["ok"]}


def test_a_frame_over_16_kib_closes_with_1009(server: Server):
    with shopper(server) as ws:
        receive(ws)
        ws.send(json.dumps(track("big", "search", query="q")) + " " * 17_000)
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_more_than_a_hundred_errors_close_with_4400(server: Server):
    with shopper(server) as ws:
        receive(ws)
        for _ in range(101):
            ws.send("nope")
        codes = [receive(ws)["code"] for _ in range(101)]
        assert codes == ["bad_json"] * 101
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4400


def test_an_unknown_site_and_a_disallowed_origin_get_403(server: Server):
    for query, origin in [
        ("site=nope", None),
        ("site=strict", "https://evil.example"),
        ("site=strict", None),
    ]:
        with pytest.raises(InvalidStatus) as info:
            shopper(server, query, origin)
        assert info.value.response.status_code == 403
    with shopper(server, "site=strict", origin="https://shop.example") as ws:
        assert receive(ws)["type"] == "welcome"


def test_a_forged_token_gets_a_new_session_and_a_valid_one_resumes(server: Server):
    with shopper(server) as ws:
        first = receive(ws)
    with shopper(server, f"site=demo&token={first['token']}") as ws:
        assert receive(ws)["session"] == first["session"]
    _, rest = first["token"].split(":", 1)
    forged = (
        "WyJzb21lb25lLWVsc2UiLCJkZW1vIl0:" + rest
    )  # ["someone-else","demo"] with the old signature
    with shopper(server, f"site=demo&token={forged}") as ws:
        assert receive(ws)["session"] not in {first["session"], "someone-else"}


def test_collect_takes_beacon_events_for_a_session(server: Server):
    with shopper(server) as ws:
        welcome = receive(ws)
    body = {
        "site": "demo",
        "token": welcome["token"],
        "events": [{"id": "last", "event": "visibility", "props": {"state": "hidden"}}],
    }
    request = urllib.request.Request(
        f"{server.url}/collect/",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 202
        assert json.load(response) == {"ack": ["last"], "errors": []}
    body["token"] = "forged"
    request = urllib.request.Request(f"{server.url}/collect/", data=json.dumps(body).encode())
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 403
    info.value.close()


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
def test_sigterm_stops_the_server_cleanly(server_env: dict[str, str], kind, tmp_path: Path):
    # beside the module's server: a journal of its own
    server = Server({**server_env, "RECORD_JOURNAL": str(tmp_path / "journal")}, "--server", kind)
    with shopper(server) as ws:
        receive(ws)
        assert server.stop(signal.SIGTERM) == 0
    output = server.output()
    assert "stream worker stopped" in output
    assert "Live Offers stopped" in output
    assert "Traceback" not in output


def _metric(server: Server, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, ["DEBUG", "SECRET_KEY"]),
        ({"DEBUG": "0", "SECRET_KEY": "s" * 50, "ALLOWED_HOSTS": "127.0.0.1"}, []),
        ({"DEBUG": "1", "SECRET_KEY": "s" * 50}, ["DEBUG"]),
    ],
)
def test_serve_refuses_to_listen_beyond_this_machine_with_development_settings(
    server_env: dict[str, str], settings: dict[str, str], named: list[str], tmp_path: Path
):
    env = {k: v for k, v in server_env.items() if k not in ("DEBUG", "SECRET_KEY")}
    env["RECORD_JOURNAL"] = str(tmp_path / "journal")  # beside the module's server
    if not named:
        # production settings: it starts (and is stopped at once)
        server = Server({**env, **settings}, "--host", "0.0.0.0")  # the point
        assert server.stop() == 0
        return
    result = manage("serve", "--host", "0.0.0.0", env={**env, **settings}, timeout=60)
    assert result.returncode == 2
    for setting in named:
        assert setting in result.stderr
    assert "127.0.0.1" in result.stderr
