"""Shoppers over real sockets, as `manage.py simulate` runs them.

Each shopper plays one session of `streaming.generator` (a persona with a known intent) over its
own collector socket, at the generated pace compressed to fit the run, and reacts to the offers
it gets as its persona would. The run keeps about N shoppers live at once for S seconds, then
gives the last pauses time to be decided, and returns a `SimulationReport`.

The personas' times are real seconds written against the server's default 30 s pause
(PAUSE_SECONDS): a generated gap that long is a pause, replayed as just over the server's own
`pause_seconds` (from the welcome frame) so the worker really decides; every other gap is
divided by `speed` and kept below the server's pause, so compression never turns a click into
a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Origin

from streaming import generator
from streaming.generator import (
    DEFAULT_MIX,
    PERSONAS,
    GeneratedSession,
    Response,
    generate_session,
)
from streaming.protocol import EVENT_KINDS

# The pause the personas' timings were written against: a generated gap this long is a pause.
PERSONA_PAUSE_SECONDS: Final = generator.PAUSE_SECONDS
# A replayed pause lasts this much beyond the server's pause_seconds: the worker decides within
# a second of the deadline, so the offer arrives while the shopper is still away.
PAUSE_MARGIN: Final = 1.2
# A compressed ordinary gap stays under this share of the server's pause.
BELOW_PAUSE: Final = 0.8
# After S seconds, shoppers stay connected this much beyond the server's pause, for the last
# decisions to arrive.
GRACE_BEYOND_PAUSE: Final = 2.0
# A shopper thinks this long (run time) before clicking on an offer banner or the next button.
REACTION_SECONDS: Final = 0.3
# Share of shoppers who would not buy with an offer that close its banner (the rest ignore it).
DISMISS_SHARE: Final = 0.7
CONNECT_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 1.0
# After its last event a shopper waits at most this long for outstanding acks.
ACK_WAIT: Final = 2.0
# Rate-limited events are not acknowledged: sent again after this long, a few times at most.
RETRY_AFTER: Final = 0.5
MAX_SENDS: Final = 5
# After a failed connection a slot waits before trying again, so a dead server is not hammered.
RECONNECT_AFTER: Final = 1.0
# Initial arrivals spread over this long (at most a quarter of the run), not one burst.
ARRIVAL_SPREAD: Final = 1.0
# The run is cut this long after its planned end, whatever is still open.
HARD_STOP_MARGIN: Final = 5.0
PROBLEMS_KEPT: Final = 20

COLLECTOR_PATH: Final = "/ws/collect/"
WS_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}

Reaction = Literal["accept_and_buy", "accept", "dismiss", "ignore", "leave"]


class CannotConnect(Exception):
    """No socket to the server: it is down, refuses the handshake, or never says welcome."""


# --- the report -----------------------------------------------------------------------------


@dataclass
class PersonaTally:
    shoppers: int = 0
    finished: int = 0
    events: int = 0
    offers: int = 0
    accepted: int = 0
    purchases: int = 0


def _persona_tallies() -> dict[str, PersonaTally]:
    return {name: PersonaTally() for name in PERSONAS}


@dataclass
class SimulationReport:
    """What happened so far; progress callbacks see it live, the run returns it complete."""

    url: str
    shoppers: int  # at once
    seconds: float
    speed: float
    seed: int
    pause_seconds: float = 0.0
    elapsed: float = 0.0
    active: int = 0
    interrupted: bool = False
    started: int = 0
    finished: int = 0
    cut_short: int = 0
    dropped: int = 0
    connect_failures: int = 0
    sent: int = 0
    resent: int = 0
    acked: int = 0
    refused: int = 0  # events given up on because of an error frame
    errors: Counter[str] = field(default_factory=Counter)  # error frames by code
    offers_received: int = 0
    offers_accepted: int = 0
    offers_dismissed: int = 0
    offers_ignored: int = 0
    put_off: int = 0  # shoppers who would have bought and left at an offer
    purchases_with_offer: int = 0
    purchases_without_offer: int = 0
    redeeming: bool = False  # given an API key: codes used are redeemed as the shop would
    codes_redeemed: int = 0
    personas: dict[str, PersonaTally] = field(default_factory=_persona_tallies)
    problems: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.acked / self.elapsed if self.elapsed > 0 else 0.0

    def problem(self, text: str) -> None:
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(text)

    def status(self) -> str:
        """One line of progress."""
        clock = (
            f"{self.elapsed:5.1f}/{self.seconds:g} s"
            if self.elapsed <= self.seconds
            else f"{self.seconds:g} s + {self.elapsed - self.seconds:.1f} s for the last decisions"
        )
        return (
            f"{clock}  shoppers {self.active} live, "
            f"{self.started} started  events {self.sent} sent, {self.acked} acked"
            f"{f', {self.refused} refused' if self.refused else ''}  "
            f"offers {self.offers_received} ({self.offers_accepted} accepted)  "
            f"purchases {self.purchases_with_offer + self.purchases_without_offer}"
        )

    def table(self) -> str:
        ran = "interrupted after" if self.interrupted else "ran"
        lines = [
            f"Live Offers simulation against {self.url}",
            f"  {self.shoppers} shoppers at once for {self.seconds:g} s ({ran} {self.elapsed:.1f} s), "
            f"speed {self.speed:g}x, server pause {self.pause_seconds:g} s, seed {self.seed}",
            "",
        ]
        rows: list[tuple[str, int | str]] = [
            ("shoppers started", self.started),
            ("shoppers finished", self.finished),
            ("shoppers cut short", self.cut_short),
            ("shoppers dropped", self.dropped),
            ("connections failed", self.connect_failures),
            ("events sent", self.sent),
            ("events acked", self.acked),
            ("events refused", self.refused),
            *((f"errors {code}", n) for code, n in sorted(self.errors.items())),
            ("events/s", f"{self.events_per_second:.1f}"),
            ("offers received", self.offers_received),
            ("offers accepted", self.offers_accepted),
            ("offers dismissed", self.offers_dismissed),
            ("offers ignored", self.offers_ignored),
            ("put off by an offer", self.put_off),
            ("purchases with offer", self.purchases_with_offer),
            ("purchases without offer", self.purchases_without_offer),
        ]
        if self.redeeming:
            rows.append(("codes redeemed", self.codes_redeemed))
        lines += [f"{label:<24}{value:>10}" for label, value in rows]
        columns = ("shoppers", "finished", "events", "offers", "accepted", "purchases")
        lines += ["", f"{'persona':<14}" + "".join(f"{c:>11}" for c in columns)]
        for name, tally in self.personas.items():
            values = (getattr(tally, c) for c in columns)
            lines.append(f"{name:<14}" + "".join(f"{v:>11}" for v in values))
        if self.problems:
            lines += ["", "problems (error frames the generator should never cause):"]
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


# --- plain functions: the address, the replayed times, the reaction to an offer ----------------


def collector_url(url: str, site: str) -> str:
    """`ws(s)://HOST[:PORT]/ws/collect/?site=KEY` from an http(s) or ws(s) address."""
    parts = urlsplit(url.strip())
    scheme = WS_SCHEMES.get(parts.scheme.lower())
    try:
        _ = parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError:
        scheme = None
    if scheme is None or not parts.hostname:
        raise ValueError(
            f"--url must look like http(s)://HOST[:PORT] or ws(s)://HOST[:PORT], not {url!r}"
        )
    # A server mounted under a prefix keeps it; the collector's own path is added once.
    path = parts.path.rstrip("/")
    if not path.endswith(COLLECTOR_PATH.rstrip("/")):
        path += COLLECTOR_PATH.rstrip("/")
    return urlunsplit((scheme, parts.netloc, path + "/", urlencode({"site": site}), ""))


HTTP_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
REDEEM_PATH: Final = "/api/redeem/"


def redeem_url(url: str) -> str:
    """`http(s)://HOST[:PORT]/api/redeem/` of the server at `url` (as `collector_url` reads it)."""
    parts = urlsplit(collector_url(url, "-"))
    path = parts.path.rstrip("/").removesuffix(COLLECTOR_PATH.rstrip("/"))
    scheme = HTTP_SCHEMES[parts.scheme]
    return urlunsplit((scheme, parts.netloc, path + REDEEM_PATH, "", ""))


class Redeemer:
    """The shop's backend: redeems a code used at a purchase with the site's API key, as a
    shop's checkout does (`POST /api/redeem/`); only a redemption counts the code's discount."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = redeem_url(url)
        self.api_key = api_key

    def _post(self, body: dict[str, Any]) -> int:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    async def redeem(self, code: str, order_id: str, total: float) -> int:
        """The HTTP status of the redemption (0: no answer)."""
        body = {"code": code, "order_id": order_id, "total": total}
        try:
            return await asyncio.to_thread(self._post, body)
        except (OSError, ValueError):
            return 0


def replay_gap(gap: float, *, pause_seconds: float, speed: float) -> float:
    """How long a generated gap between two events lasts in the run."""
    if gap >= PERSONA_PAUSE_SECONDS:
        return pause_seconds + PAUSE_MARGIN
    return min(gap / speed, pause_seconds * BELOW_PAUSE)


def replay_times(session: GeneratedSession, *, pause_seconds: float, speed: float) -> list[float]:
    """Seconds from the shopper's start at which each of its events is sent."""
    times: list[float] = []
    at = previous = 0.0
    for event in session.events:
        at += replay_gap(event.at - previous, pause_seconds=pause_seconds, speed=speed)
        previous = event.at
        times.append(at)
    return times


def reaction_to_offer(session: GeneratedSession, rng: random.Random) -> Reaction:
    """What the shopper does with an offer: as its hidden response says (streaming/generator.py)."""
    if session.response == Response.PUT_OFF:
        return "leave"  # would have bought; the offer sends it away
    if session.purchased:
        return "accept"  # decided: takes the discount, then buys as it meant to
    if session.buys_with_offer:
        return "accept_and_buy"  # persuaded: the offer is what it waited for
    return "dismiss" if rng.random() < DISMISS_SHARE else "ignore"


def _props(frame: dict[str, object]) -> dict[str, Any]:
    props = frame.get("props")
    return dict(props) if isinstance(props, dict) else {}


# --- the connection -------------------------------------------------------------------------


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        why = {
            403: " (unknown site key, or an Origin the site does not allow)",
            404: " (no collector there)",
        }
        return f"the server answered HTTP {status}{why.get(status, '')}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def open_socket(url: str, origin: str | None) -> tuple[ClientConnection, dict[str, Any]]:
    """A collector socket and its welcome frame, or CannotConnect saying why not."""
    try:
        ws = await connect(
            url,
            origin=Origin(origin) if origin else None,
            open_timeout=CONNECT_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
        )
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise CannotConnect(f"cannot reach {url}: {describe_failure(exc)}") from exc
    try:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
    except (TimeoutError, ConnectionClosed, ValueError) as exc:
        await ws.close()
        raise CannotConnect(f"{url} sent no welcome frame: {describe_failure(exc)}") from exc
    if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
        await ws.close()
        raise CannotConnect(f"{url} sent {welcome!r} where a welcome frame was due")
    return ws, welcome


# --- one shopper ----------------------------------------------------------------------------


class SocketGone(Exception):
    pass


@dataclass(slots=True)
class _Sent:
    frame: str  # as sent, to send again when rate limited
    name: str
    sends: int = 1


# What wakes a waiting shopper: an offer, an event to send again, all acked, or the socket gone.
InboxItem = tuple[Literal["offer", "retry", "settled", "gone"], Any]


class Shopper:
    """One session on one socket: plays its script, keeps its cart, counts acks, takes offers."""

    def __init__(
        self,
        session: GeneratedSession,
        ws: ClientConnection,
        *,
        pause_seconds: float,
        speed: float,
        stop_at: float,
        end_at: float,
        rng: random.Random,
        report: SimulationReport,
        redeemer: Redeemer | None = None,
    ) -> None:
        self.session = session
        self.redeemer = redeemer
        self.ws = ws
        self.pause_seconds = pause_seconds
        self.speed = speed
        self.stop_at = stop_at  # no scripted events after this (loop time)
        self.end_at = end_at  # the socket closes by then
        self.rng = rng
        self.report = report
        self.tally = report.personas[session.persona]
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[InboxItem] = asyncio.Queue()
        self.pending: dict[str, _Sent] = {}  # by event id, until acknowledged or refused
        self.retries: list[asyncio.TimerHandle] = []
        self.cart: dict[str, float] = {}  # product -> price x quantity
        self.last_activity = self.loop.time()
        self.discount = 0.0
        self.code = ""  # the accepted offer's code, used at the purchase
        self.accepted = False
        self.bought = False
        self.persuaded = False  # bought because of an offer, off its script
        self.put_off = False  # left at an offer, off its script
        self.reactions = 0

    # --- the script ---

    async def play(self) -> bool:
        """The whole session; True when it played to its end before the run stopped."""
        start = self.loop.time()
        times = replay_times(self.session, pause_seconds=self.pause_seconds, speed=self.speed)
        completed = True
        for at, generated in zip(times, self.session.events, strict=True):
            await self.live_until(min(start + at, self.stop_at))
            if self.persuaded or self.put_off:
                break  # bought through the offer, or left at it: the rest of its script is moot
            if self.loop.time() >= self.stop_at:
                completed = False
                break
            frame = generated.frame
            props = _props(frame)
            if frame["event"] == "purchase":
                props = self.paid(props)  # a sure thing that took the offer pays with it
            await self.send(str(frame["id"]), str(frame["event"]), props)
            if frame["event"] == "purchase":
                await self.redeem(props)
        if self.cart and not self.bought and not self.put_off:
            # Gone quiet with a full cart: a pause, and perhaps an offer to react to.
            await self.live_until(self.last_activity + self.pause_seconds + PAUSE_MARGIN)
        await self.settle(self.loop.time() + ACK_WAIT)
        return completed

    async def live_until(self, moment: float, *, or_settled: bool = False) -> None:
        """Wait until `moment` (never past the run's end), taking offers meanwhile; with
        `or_settled`, only until every event sent has been acknowledged or refused."""
        moment = min(moment, self.end_at)
        while (timeout := moment - self.loop.time()) > 0:
            if or_settled and not self.pending:
                return
            try:
                kind, value = await asyncio.wait_for(self.inbox.get(), timeout)
            except TimeoutError:
                return
            if kind == "gone":
                raise SocketGone
            if kind == "retry":
                await self.resend(value)
            elif kind == "offer":
                await self.react(value)

    async def react(self, offer: dict[str, Any]) -> None:
        offer_id = str(offer.get("offer_id", ""))
        await self.send_reaction("offer_shown", {"offer_id": offer_id})
        reaction = reaction_to_offer(self.session, self.rng)
        if reaction == "ignore":
            self.report.offers_ignored += 1
            return
        await self.live_until(self.loop.time() + REACTION_SECONDS)
        if reaction == "leave":
            self.report.offers_dismissed += 1
            self.report.put_off += 1
            self.put_off = True
            await self.send_reaction("offer_dismissed", {"offer_id": offer_id})
            return
        if reaction == "dismiss":
            self.report.offers_dismissed += 1
            await self.send_reaction("offer_dismissed", {"offer_id": offer_id})
            return
        self.report.offers_accepted += 1
        self.tally.accepted += 1
        self.accepted = True
        self.discount = float(offer.get("discount_percent") or 0)
        self.code = str(offer.get("code") or "")
        await self.send_reaction("offer_accepted", {"offer_id": offer_id})
        if reaction == "accept_and_buy" and self.cart and not self.bought:
            await self.buy()

    async def buy(self) -> None:
        self.persuaded = True
        await self.live_until(self.loop.time() + REACTION_SECONDS)
        await self.send_reaction("checkout_start", {})
        await self.live_until(self.loop.time() + REACTION_SECONDS)
        props = self.paid({"order_id": f"sim-{self.rng.randrange(10**9)}"})
        await self.send_reaction("purchase", props)
        await self.redeem(props)

    async def redeem(self, props: dict[str, Any]) -> None:
        """The shop's backend redeems the code the order used, if any."""
        if self.redeemer is None or not props.get("code"):
            return
        status = await self.redeemer.redeem(
            str(props["code"]), str(props.get("order_id", "")), float(props.get("total", 0))
        )
        if status == 200:
            self.report.codes_redeemed += 1
        else:
            self.report.problem(f"{self.session.persona}: redeeming {props['code']}: {status}")

    def paid(self, props: dict[str, Any]) -> dict[str, Any]:
        """A purchase's props: with an accepted offer, its code and the total after it."""
        if not self.accepted:
            return props
        total = round(sum(self.cart.values()) * (1 - self.discount / 100), 2)
        return props | {"total": total} | ({"code": self.code} if self.code else {})

    # --- frames out ---

    async def send_reaction(self, name: str, props: dict[str, Any]) -> None:
        self.reactions += 1
        await self.send(f"r-{self.reactions}", name, props)

    async def send(self, event_id: str, name: str, props: dict[str, Any]) -> None:
        frame = json.dumps({"type": "track", "id": event_id, "event": name, "props": props})
        self.pending[event_id] = _Sent(frame, name)
        self.follow_cart(name, props)
        if EVENT_KINDS[name].activity:
            self.last_activity = self.loop.time()
        self.report.sent += 1
        self.tally.events += 1
        await self.ws.send(frame)

    async def resend(self, event_id: str) -> None:
        sent = self.pending.get(event_id)
        if sent is not None:
            sent.sends += 1
            self.report.resent += 1
            await self.ws.send(sent.frame)

    def follow_cart(self, name: str, props: dict[str, Any]) -> None:
        if name == "add_to_cart":
            product = str(props["product_id"])
            line = float(props["price"]) * int(props.get("quantity", 1))
            self.cart[product] = self.cart.get(product, 0.0) + line
        elif name == "remove_from_cart":
            self.cart.pop(str(props["product_id"]), None)
        elif name == "purchase":
            self.bought = True
            self.cart.clear()

    async def settle(self, moment: float) -> None:
        """Wait (until `moment` at most) for every sent event to be acknowledged or refused."""
        await self.live_until(moment, or_settled=True)

    # --- frames in ---

    async def read(self) -> None:
        try:
            async for message in self.ws:
                self.receive(message)
        except ConnectionClosed:
            pass
        finally:
            self.inbox.put_nowait(("gone", None))  # wakes the script: the socket is gone

    def receive(self, message: str | bytes) -> None:
        try:
            frame = json.loads(message)
            kind = frame["type"]
        except (ValueError, TypeError, KeyError):
            self.report.problem(f"{self.session.persona}: unreadable server frame {message!r:.80}")
            return
        if kind == "ack":
            self.acknowledged([str(i) for i in frame.get("ids", ())])
        elif kind == "error":
            self.refused(frame)
        elif kind == "offer":
            self.report.offers_received += 1
            self.tally.offers += 1
            self.inbox.put_nowait(("offer", frame))

    def acknowledged(self, ids: list[str]) -> None:
        for event_id in ids:
            sent = self.pending.pop(event_id, None)
            if sent is None:
                continue  # a duplicate's second ack
            self.report.acked += 1
            if sent.name == "purchase":
                self.count_purchase()
        self.check_settled()

    def count_purchase(self) -> None:
        self.tally.purchases += 1
        if self.accepted:
            self.report.purchases_with_offer += 1
        else:
            self.report.purchases_without_offer += 1

    def refused(self, frame: dict[str, Any]) -> None:
        code, event_id = str(frame.get("code")), frame.get("id")
        self.report.errors[code] += 1
        sent = self.pending.get(event_id) if isinstance(event_id, str) else None
        if code == "rate_limited" and sent is not None and sent.sends < MAX_SENDS:
            # Not applied, not acknowledged: send it again later, as the snippet does.
            self.retries.append(
                self.loop.call_later(RETRY_AFTER, self.inbox.put_nowait, ("retry", event_id))
            )
            return
        if code != "rate_limited":
            what = sent.frame if sent else f"id {event_id!r}"
            self.report.problem(
                f"{self.session.persona}: {code}: {frame.get('detail')} - {what:.160}"
            )
        if sent is not None:
            del self.pending[str(event_id)]
            self.report.refused += 1
        self.check_settled()

    def check_settled(self) -> None:
        if not self.pending:
            self.inbox.put_nowait(("settled", None))

    def close(self) -> None:
        for handle in self.retries:
            handle.cancel()


# --- the run --------------------------------------------------------------------------------


class SessionSource:
    """An endless, seeded supply of generated sessions in the persona mix."""

    def __init__(self, seed: int, mix: dict[str, float] | None) -> None:
        shares = mix or DEFAULT_MIX
        unknown = set(shares) - set(PERSONAS)
        if unknown:
            raise ValueError(f"unknown personas: {', '.join(sorted(unknown))}")
        total = sum(shares.values())
        if total <= 0 or any(share < 0 for share in shares.values()):
            raise ValueError("persona shares must be >= 0 and not all 0")
        self.names = list(shares)
        self.shares = [shares[name] / total for name in self.names]
        self.rng = np.random.default_rng(seed)

    def next(self) -> tuple[GeneratedSession, random.Random]:
        """A session, and the randomness its shopper reacts with."""
        persona = self.names[int(self.rng.choice(len(self.names), p=self.shares))]
        session = generate_session(self.rng, persona)
        return session, random.Random(int(self.rng.integers(2**63)))


@dataclass
class _Run:
    url: str
    origin: str | None
    speed: float
    pause_seconds: float
    stop_at: float
    end_at: float
    sessions: SessionSource
    report: SimulationReport
    redeemer: Redeemer | None = None

    async def slot(
        self, first: tuple[ClientConnection, dict[str, Any]] | None, delay: float
    ) -> None:
        """One place for a shopper: as soon as one leaves, the next one arrives, until S."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(delay)
        while loop.time() < self.stop_at:
            session, rng = self.sessions.next()
            if first is None:
                try:
                    ws, _ = await open_socket(self.url, self.origin)
                except CannotConnect as exc:
                    self.report.connect_failures += 1
                    self.report.problem(str(exc))
                    await asyncio.sleep(max(0.0, min(RECONNECT_AFTER, self.stop_at - loop.time())))
                    continue
            else:
                (ws, _), first = first, None
            await self.shop(session, ws, rng)

    async def shop(
        self, session: GeneratedSession, ws: ClientConnection, rng: random.Random
    ) -> None:
        report = self.report
        shopper = Shopper(
            session,
            ws,
            pause_seconds=self.pause_seconds,
            speed=self.speed,
            stop_at=self.stop_at,
            end_at=self.end_at,
            rng=rng,
            report=report,
            redeemer=self.redeemer,
        )
        report.started += 1
        report.active += 1
        shopper.tally.shoppers += 1
        reader = asyncio.create_task(shopper.read())
        outcome = "cut short"  # also when the run is cancelled under it
        try:
            outcome = "finished" if await shopper.play() else "cut short"
        except (SocketGone, ConnectionClosed, OSError):
            outcome = "dropped"
        finally:
            report.active -= 1
            shopper.close()
            with contextlib.suppress(Exception):
                await ws.close()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if outcome == "finished":
                report.finished += 1
                shopper.tally.finished += 1
            elif outcome == "dropped":
                report.dropped += 1
            else:
                report.cut_short += 1


async def _tick(
    report: SimulationReport,
    start: float,
    progress: Callable[[SimulationReport], None],
    every: float,
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        report.elapsed = loop.time() - start
        progress(report)


async def _first_socket(
    url: str, origin: str | None, stop: asyncio.Event
) -> tuple[ClientConnection, dict[str, Any]] | None:
    """The first socket, or None when the run is stopped before it opens."""
    opening = asyncio.create_task(open_socket(url, origin))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (opening, stopping):
            task.cancel()  # nothing happens to one that is done
        await asyncio.gather(opening, stopping, return_exceptions=True)
    return None if opening.cancelled() else opening.result()


def validate(*, site: str, shoppers: int, seconds: float, speed: float) -> None:
    if not site:
        raise ValueError("--site must not be empty")
    if shoppers < 1:
        raise ValueError("--shoppers must be at least 1")
    if not 0 < seconds < float("inf"):
        raise ValueError("--seconds must be a number above 0")
    if not 0 < speed < float("inf"):
        raise ValueError("--speed must be a number above 0")


async def run_simulation(
    *,
    url: str,
    site: str,
    shoppers: int,
    seconds: float,
    seed: int | None = None,
    speed: float = 10.0,
    origin: str | None = None,
    mix: dict[str, float] | None = None,
    progress: Callable[[SimulationReport], None] | None = None,
    progress_every: float = 0.5,
    stop: asyncio.Event | None = None,
    api_key: str | None = None,
) -> SimulationReport:
    """Keep `shoppers` shoppers live for `seconds`, then let the last pauses be decided.

    Raises ValueError for bad arguments and CannotConnect when the first socket cannot be opened
    at all; later failures are counted in the report. Setting `stop` ends the run early (the
    report says `interrupted`). Never more than `shoppers` sockets at once, and never longer
    than `seconds` plus the server's pause plus a few seconds.
    """
    validate(site=site, shoppers=shoppers, seconds=seconds, speed=speed)
    target = collector_url(url, site)
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    sessions = SessionSource(seed, mix)
    report = SimulationReport(
        url=target, shoppers=shoppers, seconds=seconds, speed=speed, seed=seed
    )
    report.redeeming = bool(api_key)
    loop = asyncio.get_running_loop()
    start = loop.time()

    stop = stop or asyncio.Event()
    # The first shopper's socket doubles as the check that the server is there at all, and its
    # welcome says how long the server's pauses are.
    first = await _first_socket(target, origin, stop)
    if first is None:
        report.interrupted = True
        report.elapsed = loop.time() - start
        return report
    report.pause_seconds = float(first[1].get("pause_seconds", PERSONA_PAUSE_SECONDS))
    stop_at = start + seconds
    run = _Run(
        url=target,
        origin=origin,
        speed=speed,
        pause_seconds=report.pause_seconds,
        stop_at=stop_at,
        end_at=stop_at + report.pause_seconds + GRACE_BEYOND_PAUSE,
        sessions=sessions,
        report=report,
        redeemer=Redeemer(url, api_key) if api_key else None,
    )
    spread = min(ARRIVAL_SPREAD, seconds / 4)
    slots = [
        asyncio.create_task(run.slot(first if n == 0 else None, spread * n / shoppers))
        for n in range(shoppers)
    ]
    everyone = asyncio.gather(*slots)
    stopper = asyncio.create_task(stop.wait())
    waiters: set[asyncio.Future[Any]] = {everyone, stopper}
    ticker = (
        asyncio.create_task(_tick(report, start, progress, progress_every)) if progress else None
    )
    try:
        done, _ = await asyncio.wait(
            waiters,
            timeout=run.end_at + HARD_STOP_MARGIN - loop.time(),
            return_when=asyncio.FIRST_COMPLETED,
        )
        report.interrupted = stopper in done
        if everyone in done:
            everyone.result()  # a shopper's bug surfaces here
    finally:
        for task in (*slots, stopper, ticker):
            if task is not None:
                task.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        if everyone.done() and not everyone.cancelled():
            everyone.exception()  # retrieved: raised above already, or None
        await asyncio.gather(stopper, return_exceptions=True)
        if ticker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await ticker  # a progress callback's own error surfaces here
        report.elapsed = loop.time() - start
    return report
