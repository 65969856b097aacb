"""A client that never reads and one that leaves mid-burst, beside honest shoppers, on a real
`serve`: the others get their offers on time, and every offer is in the database."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.factories import track
from tests.subprocesses import Server, manage, prepared_env

pytestmark = pytest.mark.e2e

PAUSE = 1.0
HONEST = 5


@pytest.fixture(scope="module")
def shop_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    return prepared_env(
        tmp_path_factory.mktemp("slow-sockets"),
        PAUSE_SECONDS=str(PAUSE),
        MAX_UNSENT_BYTES=str(16 * 1024),
        RATE_EVENTS_PER_SECOND="100000",
    )


@pytest.fixture(params=["daphne", "uvicorn"])
def shop(
    request: pytest.FixtureRequest, shop_env: tuple[dict[str, str], str]
) -> Iterator[tuple[Server, str]]:
    env, cookie = shop_env
    server = Server(env, "--server", request.param)
    yield server, cookie
    server.stop()


class Unread:
    """A raw WebSocket client that sends and never reads (a tiny receive buffer, soon full)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws/collect/?site=demo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)  # the handshake only, byte by byte: no frame is read
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, frame: dict[str, Any]) -> None:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        header = (
            struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
            if len(payload) > 125
            else (struct.pack("!BB", 0x81, 0x80 | len(payload)))
        )
        self.sock.sendall(header + mask + masked)

    def flood(self, until: float) -> int:
        """Heartbeats by the hundred, each batch acknowledged by a 7 KB frame nobody reads;
        returns how many batches went before the server cut the connection."""
        sent = 0
        try:
            while time.monotonic() < until:
                self.send(
                    {
                        "type": "batch",
                        "events": [
                            {"id": f"{sent:08d}-{i:03d}".ljust(64, "h"), "event": "heartbeat"}
                            for i in range(100)
                        ],
                    }
                )
                sent += 1
        except OSError:
            pass
        return sent


def fill_cart(ws: ClientConnection, prefix: str) -> float:
    for i, frame in enumerate(
        [
            track(f"{prefix}-1", "product_view", product_id="sku-espresso", price=249.0),
            track(f"{prefix}-2", "add_to_cart", product_id="sku-espresso", price=249.0),
        ]
    ):
        ws.send(json.dumps(frame))
        assert json.loads(ws.recv(timeout=5))["ids"] == [f"{prefix}-{i + 1}"]
    return time.time()


def decisions(server: Server, cookie: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{server.url}/api/decisions/?limit=1000", headers={"Cookie": f"sessionid={cookie}"}
    )
    with urllib.request.urlopen(request) as response:
        found: list[dict[str, Any]] = json.load(response)["decisions"]
    return found


def metric(server: Server, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def test_a_client_that_never_reads_and_one_that_leaves_harm_no_other_offer(shop, shop_env):
    server, cookie = shop
    started = time.monotonic()
    with ExitStack() as stack:
        unread = Unread(server.port)
        stack.callback(unread.sock.close)
        run_the_burst(server, cookie, stack, unread)
    assert time.monotonic() - started < 30
    assert "Traceback" not in server.output()
    reconciled = manage("reconcile", env=shop_env[0])
    assert reconciled.returncode == 0, reconciled.stdout


def run_the_burst(server: Server, cookie: str, stack: ExitStack, unread: Unread) -> None:
    earlier = {d["session"] for d in decisions(server, cookie)}  # the other server's run
    unread.send(
        {
            "type": "track",
            "id": "u-1",
            "event": "add_to_cart",
            "props": {"product_id": "sku-grinder", "price": 129.0},
        }
    )
    shoppers = [
        stack.enter_context(connect(f"{server.ws_url}/ws/collect/?site=demo", open_timeout=5))
        for _ in range(HONEST + 1)
    ]
    sessions = [json.loads(ws.recv(timeout=5))["session"] for ws in shoppers]
    leaver = shoppers.pop()
    flood = threading.Thread(target=unread.flood, args=(time.monotonic() + 8,))
    flood.start()
    deadlines = [fill_cart(ws, f"s{i}") + PAUSE for i, ws in enumerate(shoppers)]
    fill_cart(leaver, "leaver")
    time.sleep(PAUSE * 0.9)
    leaver.socket.close()  # gone without a close frame, as its offer is being made
    offers = []
    for ws, deadline in zip(shoppers, deadlines, strict=True):
        offer = json.loads(ws.recv(timeout=5))
        assert offer["type"] == "offer", offer
        assert time.time() - deadline < 1.0
        offers.append(offer)
    flood.join()
    assert metric(server, 'liveoffers_connections_closed_by_server_total{code="1008"}') >= 1
    by_session: dict[str, list[dict[str, Any]]] = {}
    wait_until = time.monotonic() + 5
    while time.monotonic() < wait_until:
        by_session = {}
        for decision in decisions(server, cookie):
            if decision["session"] in earlier:
                continue
            by_session.setdefault(decision["session"], []).append(decision)
        if all(s in by_session for s in sessions) and len(by_session) >= len(sessions) + 1:
            break
        time.sleep(0.1)
    for session, offer in zip(sessions, offers, strict=False):
        assert [d["offer_id"] for d in by_session[session]] == [offer["offer_id"]]
    # the one that left, and the one that never read, were decided and recorded all the same
    others = [d for s, found in by_session.items() if s not in sessions[:HONEST] for d in found]
    assert sorted(d["outcome"] for d in others) == ["offer", "offer"]
    assert all(d["offer_id"] for d in others)
