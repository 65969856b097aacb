"""Real Chromium against a real `serve`: the embed on a shop of another origin.

`live_offers` is the server (restartable on the same port and database), `third_party_shop`
serves plain HTML pages from another origin that embed the tag as a shop would, and `shopper`
is one tab of real Chromium on that shop, with `wire` recording what it said and heard.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    Page,
    Request,
    WebSocket,
    WebSocketRoute,
    sync_playwright,
)

from tests.conftest import service_missing
from tests.subprocesses import (
    GENEROUS_RULES,
    SMALL_MODEL,
    STAFF_COOKIE,
    Server,
    manage,
    project_env,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAUSE = 1.0
SITE = "demo"
ADD_TO_CART = "[data-lo-event=add_to_cart]"
# A shop that renders offers itself, keeping them in `window.offers`.
KEEP_OFFERS = "window.offers = []; liveoffers('onOffer', (offer) => offers.push(offer));"
PAGES = Path(__file__).resolve().parent / "pages"
# Waits inside one `manage.py shell` (a process start each is slow) until the offer's
# `fields` are set, then prints them.
OFFER_ROW = """
import json, time
from offers.models import Offer
for _ in range(100):
    offer = Offer.objects.filter(public_id={offer_id!r}).first()
    if offer and all(getattr(offer, f) for f in {fields!r}):
        break
    time.sleep(0.05)
print(json.dumps({{f: bool(offer and getattr(offer, f)) for f in
    ("shown_at", "accepted_at", "dismissed_at")}}))
"""


# Chromium hands a beacon sent while a page unloads to the network without telling Playwright
# (or the page's DevTools session), so pages note their beacons in sessionStorage, where the
# next page of the same origin finds them.
BEACON_LOG = "sessionStorage.getItem('test:beacons') || '[]'"
BEACON_SPY = f"""
const sendBeacon = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, body) => {{
  const queued = sendBeacon(url, body);
  const log = JSON.parse({BEACON_LOG});
  log.push({{url, body, queued}});
  sessionStorage.setItem('test:beacons', JSON.stringify(log));
  return queued;
}};
"""


@dataclass(frozen=True)
class ShopDatabase:
    env: dict[str, str]
    staff_cookie: str


class ServerOnPort(Server):
    """`manage.py serve` on a given port: `Server` picks a free one, a restart needs the same."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.launch(env, f"serve-{port}-{time.monotonic_ns()}.log", "serve", "--port", str(port))
        self.wait_healthy()


def event_counters(url: str) -> tuple[float, float]:
    """(accepted, duplicate) events since the server at `url` started, from its /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts = []
    for name in ("liveoffers_events_accepted_total", "liveoffers_events_duplicate_total"):
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found is not None, f"no {name} in /metrics"
        counts.append(float(found.group(1)))
    return counts[0], counts[1]


class LiveOffers:
    """The server under test, as the tests see it from outside."""

    def __init__(self, database: ShopDatabase) -> None:
        self.database = database
        self.server: Server = Server(database.env)
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        """A new process on the same port and database: live sessions are forgotten."""
        self.server = ServerOnPort(self.database.env, self.server.port)

    def ensure_running(self) -> None:
        """After a test that stopped the server failed before starting it again."""
        if self.server.process.poll() is not None:
            self.start_again()

    def events(self) -> tuple[float, float]:
        return event_counters(self.url)

    def decisions_of(self, session: str, timeout: float = PAUSE + 5) -> list[dict[str, Any]]:
        """The session's recorded decisions, waiting up to `timeout` for the first."""
        deadline = time.monotonic() + timeout
        while True:
            request = urllib.request.Request(
                f"{self.url}/api/decisions/?limit=1000",
                headers={"Cookie": f"sessionid={self.database.staff_cookie}"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                found = [d for d in json.load(response)["decisions"] if d["session"] == session]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def offer_row(self, offer_id: str, *until: str) -> dict[str, bool]:
        """Which of shown_at, accepted_at, dismissed_at the Offer row has, once `until` are set
        (or after 5 s)."""
        code = OFFER_ROW.format(offer_id=offer_id, fields=until)
        result = manage("shell", "-v", "0", "-c", code, env=self.database.env)
        assert result.returncode == 0, result.stderr
        row: dict[str, bool] = json.loads(result.stdout)
        return row


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ThirdPartyShop:
    """Static pages on another origin (another port) that embed the tag like any shop."""

    def __init__(self, root: Path, live_offers_url: str) -> None:
        self.root = root
        self.live_offers_url = live_offers_url
        handler = functools.partial(QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.page("other", template="plain.html")

    def page(
        self,
        name: str,
        *,
        calls: str = "",
        template: str = "product.html",
        live_offers_url: str | None = None,
    ) -> str:
        """Writes `name.html` from a template, with `calls` made to the stub before the tag
        loads; returns its URL."""
        html = (PAGES / template).read_text()
        html = html.replace("{{ live_offers }}", live_offers_url or self.live_offers_url)
        html = html.replace("{{ calls }}", calls)
        (self.root / f"{name}.html").write_text(html)
        return f"{self.url}/{name}.html"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Wire:
    """What one tab said to Live Offers and heard back, as Chromium saw it."""

    def __init__(self, page: Page, live_offers_url: str) -> None:
        self.page = page
        self.sockets: list[WebSocket] = []
        self.heard: list[dict[str, Any]] = []  # frames from the server
        self.said: list[dict[str, Any]] = []  # events sent over sockets
        self.requests: list[str] = []  # every URL asked of Live Offers, sockets aside
        self._origin = live_offers_url
        page.on("websocket", self._socket)
        page.context.on("request", self._request)

    def _socket(self, socket: WebSocket) -> None:
        self.sockets.append(socket)
        socket.on("framereceived", lambda payload: self.heard.append(json.loads(payload)))
        socket.on("framesent", lambda payload: self.said.extend(json.loads(payload)["events"]))

    def _request(self, request: Request) -> None:
        if request.url.startswith(self._origin):
            self.requests.append(request.url)

    def frames(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.heard if frame["type"] == kind]

    @property
    def session(self) -> str:
        return str(self.frames("welcome")[0]["session"])

    @property
    def acked(self) -> set[str]:
        return {event_id for frame in self.frames("ack") for event_id in frame["ids"]}

    def said_event(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.said if event["event"] == name]

    def beacons(self) -> list[dict[str, Any]]:
        """The beacons pages of this origin sent in this tab: {url, body, queued}."""
        found: list[dict[str, Any]] = self.page.evaluate(f"JSON.parse({BEACON_LOG})")
        return found

    def beaconed(self) -> list[dict[str, Any]]:
        """The events that beacons carried."""
        return [
            event
            for beacon in self.beacons()
            if beacon["queued"]
            for event in json.loads(beacon["body"])["events"]
        ]

    def wait_until(self, what: str, check: Callable[[], object], timeout: float = 5) -> None:
        # Playwright delivers its events while the test is inside one of its calls: wait in one.
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting until {what}")
            self.page.wait_for_timeout(50)

    def wait_acked(self, name: str, count: int = 1, timeout: float = 5) -> list[dict[str, Any]]:
        """Until `count` events `name` were sent over a socket and acknowledged; returns them."""

        def acked() -> bool:
            sent = self.said_event(name)
            return len(sent) >= count and {e["id"] for e in sent} <= self.acked

        self.wait_until(f"{count} {name} are acknowledged", acked, timeout)
        return self.said_event(name)

    def linger(self, seconds: float) -> None:
        """Let the page run (and its events arrive) for a while."""
        self.page.wait_for_timeout(seconds * 1000)


class SocketValve:
    """Routes a tab's sockets through the test, which can stop the tab's frames reaching the
    server (a stalled network: nothing sent is acknowledged) while the server's still arrive."""

    def __init__(self, page: Page) -> None:
        self.open = True
        page.route_web_socket(re.compile(r".*/ws/collect/.*"), self._route)

    def _route(self, socket: WebSocketRoute) -> None:
        server = socket.connect_to_server()
        socket.on_message(lambda message: server.send(message) if self.open else None)

    def close(self) -> None:
        self.open = False


@dataclass
class Shopper:
    page: Page
    wire: Wire


@pytest.fixture(scope="session")
def shop_database(tmp_path_factory: pytest.TempPathFactory) -> ShopDatabase:
    tmp = tmp_path_factory.mktemp("browser")
    env = project_env(
        DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
        LIVEOFFERS_TEST_DIR=str(tmp),
        PAUSE_SECONDS=str(PAUSE),
        HOLDOUT_PERCENT="0",
        RATE_BURST="100000",
    )
    for command in (
        ["migrate", "--noinput"],
        ["shell", "-v", "0", "-c", SMALL_MODEL],
        ["bootstrap_demo"],
        ["shell", "-v", "0", "-c", GENEROUS_RULES],
    ):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stderr
    cookie = manage("shell", "-v", "0", "-c", STAFF_COOKIE, env=env)
    assert cookie.returncode == 0, cookie.stderr
    return ShopDatabase(env, cookie.stdout.strip())


@pytest.fixture(scope="module")
def live_offers(shop_database: ShopDatabase) -> Iterator[LiveOffers]:
    server = LiveOffers(shop_database)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def third_party_shop(
    live_offers: LiveOffers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThirdPartyShop]:
    shop = ThirdPartyShop(tmp_path_factory.mktemp("shop"), live_offers.url)
    yield shop
    shop.close()


@pytest.fixture(scope="session", autouse=True)
def chromium() -> Path:
    """Checked first, before any server is prepared for nothing."""
    if not CHROMIUM.exists():
        service_missing(f"Chromium at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    # The sync API runs its own event loop; test functions here are plain sync functions, so
    # none of pytest-asyncio's loops is running when it starts.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _shopper(browser: Browser, live_offers: LiveOffers, init_script: str = "") -> Iterator[Shopper]:
    live_offers.ensure_running()
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    context.add_init_script(BEACON_SPY + init_script)
    page = context.new_page()
    yield Shopper(page, Wire(page, live_offers.url))
    context.close()


@pytest.fixture
def shopper(browser: Browser, live_offers: LiveOffers) -> Iterator[Shopper]:
    """A shopper's tab, in a fresh browser profile."""
    yield from _shopper(browser, live_offers)


@pytest.fixture
def private_shopper(browser: Browser, live_offers: LiveOffers) -> Iterator[Shopper]:
    """A shopper whose browser says Do Not Track."""
    yield from _shopper(
        browser, live_offers, "Object.defineProperty(navigator, 'doNotTrack', {get: () => '1'})"
    )
