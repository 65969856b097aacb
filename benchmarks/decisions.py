"""`bench decisions`: from a pause's deadline to the `offer` frame at the client, N carts at once.

Three servers, each in its own process pinned to core 0, take the same carts from one client
process pinned to core 1:

- timer floor: a bare `websockets` server whose only work is a timer: each activity event
  (re)arms `loop.call_at(receive time + pause)`, which sends an offer frame. The least a Python
  asyncio server does to send a frame at a deadline (`python -m benchmarks.decisions timer`).
- project: `manage.py serve` on a throw-away SQLite database prepared by `bootstrap_demo` (which
  trains and activates the model), with every pause made to end in an offer: holdout 0%,
  cooldown 0 s, every offer rule's `min_risk` and `min_cart_value` 0 and budgets out of the way;
- project daphne: the same under `manage.py serve --server daphne` (`serve` runs uvicorn).

The client (`python -m benchmarks.decisions client`) opens N collector sockets, then sends each
one activity frame (a product view and an add to cart), paced evenly over `--window` seconds, and
waits for the offers. The server stamps a session's last activity when it receives the frame,
between the client's send and the ack's arrival, so the deadline lies between
send + pause and ack + pause. Latency from the send is an upper bound (the conservative figure,
shown first); from the ack a lower bound; the ack round trip says how far apart they are.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from argparse import ArgumentParser
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, LiteralString

import msgspec
import psycopg
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server as WebSocketServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, WebSocketException

from benchmarks import BenchError, Benchmark, Progress, bounded_float, bounded_int, bounded_ints
from benchmarks.harness import (
    BASE_DIR,
    HOST,
    PATH,
    WINDOW_FRAMES,
    Cores,
    Server,
    bench_env,
    figure,
    machine,
    manage,
    prepare_database,
    row,
    run_pinned_client,
    running_server,
    stop,
)
from streaming.protocol import EVENT_KINDS, MAX_FRAME_BYTES

WARMUP_CARTS = 20
# Sockets opening at once: daphne listens with a backlog of 50.
OPENING_AT_ONCE = 32
# The project's promise: each pause's offer within one second of its deadline.
ON_TIME_SECONDS = 1.0
# Waiting for a late or second offer after the last deadline's second has passed.
GRACE_SECONDS = 0.2
# Waiting for the server to count, and to record, a round's decisions.
RECORDS_TIMEOUT = 120.0
# How often the database is asked how many decisions it holds, while a round runs.
RECORD_POLL_SECONDS = 0.02
# Ticks of the client's loop-lag probe.
LAG_PROBE_SECONDS = 0.001

PROJECT = Server("project", "project", ("manage.py", "serve"))
PROJECT_DAPHNE = Server(
    "project-daphne", "project daphne", ("manage.py", "serve", "--server", "daphne")
)
PROJECTS = (PROJECT, PROJECT_DAPHNE)
# The default server's rounds again, with the load client flooding it with acks meanwhile.
FLOODED = "project-flood"
LABELS = {
    "timer": "timer floor",
    **{server.key: server.label for server in PROJECTS},
    FLOODED: "project+flood",
}
# Before a flooded round: the flood's sockets open and reach their pace.
FLOOD_RAMP_SECONDS = 1.0


def timer_server(pause_seconds: float) -> Server:
    return Server(
        "timer",
        "timer floor",
        ("-m", "benchmarks.decisions", "timer", f"--pause-seconds={pause_seconds:g}"),
    )


# --- figures -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value at or above `share` of the values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Spread:
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(
            percentile(values, 0.5),
            percentile(values, 0.9),
            percentile(values, 0.99),
            max(values, default=math.nan),
        )


@dataclass(frozen=True, slots=True)
class ServerDelay:
    """`liveoffers_decision_delay_seconds` over one round: deadline to decision, server side."""

    count: int
    mean_ms: float
    # histogram bucket (upper bound, ms) -> share of the round's decisions at or under it
    within: dict[float, float]
    # seconds from the client's end (its last deadline + 1.2 s) until the histogram held every
    # decision: it counts a decision once decided and explained, not once in the database
    recorded_after: float = 0.0

    def p99_bound_ms(self) -> float:
        """The smallest bucket bound that holds 99% of the decisions (inf when none does)."""
        return next((bound for bound, share in self.within.items() if share >= 0.99), math.inf)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A round's decisions as the database holds them, and how soon it held them all."""

    decisions: int
    pause_keys: int  # distinct: one decision per pause
    offers: int  # decisions with the outcome `offer`
    offer_rows: int  # rows of the offers table
    decided_over: float  # seconds from the first decision to the last
    recorded_after: float  # seconds from the first decision until every one was in the database

    @property
    def per_second(self) -> float:
        """Decisions recorded a second, from the first decision until all were in the database."""
        return self.decisions / self.recorded_after if self.recorded_after > 0 else 0.0

    @property
    def decided_per_second(self) -> float | None:
        """Decisions made a second, from the first to the last (None: all in one batch)."""
        return self.decisions / self.decided_over if self.decided_over > 0 else None

    @property
    def after_last(self) -> float:
        """Seconds from the last decision until every decision was in the database."""
        return self.recorded_after - self.decided_over

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "per_second": self.per_second,
            "decided_per_second": self.decided_per_second,
            "after_last": self.after_last,
        }


@dataclass(frozen=True, slots=True)
class Round:
    server: str
    carts: int
    pause_seconds: float
    offers: int  # offer frames received in all
    offered: int  # sockets that got at least one
    on_time: int  # sockets whose one offer came within a second of the deadline
    from_send: Spread  # ms, deadline taken as send + pause: an upper bound on latency
    from_ack: Spread  # ms, deadline taken as ack + pause: a lower bound
    ack_rtt: Spread  # ms, send to ack
    activity_spread_ms: float  # first to last send
    client_lag: Spread  # ms, one pass of the client's event loop
    client_core_busy: float  # while waiting for the offers
    server_delay: ServerDelay | None = None
    # From the database: how soon the round's decisions were all in it (the project's rounds).
    recorded: Recorded | None = None
    # A flooded round: events/s the server acknowledged to the flood while the round ran.
    flood_events_per_second: float | None = None

    @property
    def exactly_one_each(self) -> bool:
        return self.offers == self.offered == self.on_time == self.carts


@dataclass
class DecisionsReport:
    pause_seconds: float
    window: float
    cores: Cores
    flood_sockets: int = 0
    rounds: list[Round] = field(default_factory=list)

    def find(self, server: str, carts: int) -> Round:
        for measured in self.rounds:
            if (measured.server, measured.carts) == (server, carts):
                return measured
        raise KeyError((server, carts))

    def table(self) -> str:
        rows = [
            f"decisions (pause deadline to offer frame at the client, ms; pause "
            f"{self.pause_seconds:g} s, activity paced over {self.window:g} s; "
            f"{self.cores.describe()})",
            _row(
                "server",
                "carts",
                "offers",
                "on time",
                "p50",
                "p90",
                "p99",
                "max",
                "p99/floor",
                "p50 ack",
                "p99 ack",
                "rtt p99",
                "lag max",
            ),
        ]
        for carts in sorted({r.carts for r in self.rounds}):
            floor = self.find("timer", carts)
            measured_here = [r for r in self.rounds if r.carts == carts and r.server != "timer"]
            for measured in (floor, *measured_here):
                late = measured.from_send
                rows.append(
                    _row(
                        LABELS.get(measured.server, measured.server),
                        f"{carts:,}",
                        f"{measured.offers:,}",
                        f"{measured.on_time:,}",
                        _ms(late.p50),
                        _ms(late.p90),
                        _ms(late.p99),
                        _ms(late.max),
                        f"{late.p99 / floor.from_send.p99:.1f}x",
                        _ms(measured.from_ack.p50),
                        _ms(measured.from_ack.p99),
                        _ms(measured.ack_rtt.p99),
                        _ms(measured.client_lag.max),
                    )
                )
        rows.append(
            "p50-max: deadline taken as send + pause (an upper bound on latency); ack: as ack + "
            "pause (a lower bound); rtt: send to ack; lag: the client's longest event loop pass; "
            "on time: sockets with exactly one offer, within 1 s of the deadline"
        )
        for measured in self.rounds:
            if measured.flood_events_per_second is not None:
                rows.append(
                    f"project+flood, {measured.carts:,} carts: the same round while "
                    f"{self.flood_sockets} more sockets send single-event frames as fast as "
                    f"they are acknowledged ({measured.flood_events_per_second:,.0f} events/s "
                    "acknowledged to them meanwhile)"
                )
        for measured in self.rounds:
            delay = measured.server_delay
            if measured.server == "timer" or delay is None:
                continue
            within = ", ".join(
                f"≤ {bound:g} ms {share:.1%}"
                for bound, share in delay.within.items()
                if bound in (5.0, 10.0, 25.0, 50.0, 100.0)
            )
            rows.append(
                f"server side, {LABELS.get(measured.server, measured.server)}, "
                f"{measured.carts:,} carts (liveoffers_decision_delay_seconds, "
                f"deadline to decision): {delay.count:,} decisions, mean {delay.mean_ms:.1f} ms; "
                f"{within}; all counted {delay.recorded_after:.1f} s after the client's wait"
            )
        return "\n".join(rows + self._record_rows())

    def _record_rows(self) -> list[str]:
        recorded = [r for r in self.rounds if r.recorded is not None]
        if not recorded:
            return []
        widths = (16, 7, 11, 12, 14, 22)
        rows = [
            f"record (the round's decisions in the database, polled every "
            f"{RECORD_POLL_SECONDS * 1e3:g} ms while it runs)",
            row(
                "server",
                "carts",
                "decided/s",
                "recorded/s",
                "all recorded",
                "last decision → all",
                widths=widths,
            ),
        ]
        for measured in recorded:
            assert measured.recorded is not None
            decided = measured.recorded.decided_per_second
            rows.append(
                row(
                    LABELS.get(measured.server, measured.server),
                    f"{measured.carts:,}",
                    "-" if decided is None else f"{decided:,.0f}",
                    f"{measured.recorded.per_second:,.0f}",
                    f"{measured.recorded.recorded_after:.2f} s",
                    f"{measured.recorded.after_last:.2f} s",
                    widths=widths,
                )
            )
        rows.append(
            "decided/s: decisions from the first to the last (Decision.at); recorded/s: "
            "decisions over the time from the first until every one was in the database; all "
            "recorded: that time; last decision → all: from the last decision until then"
        )
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "pause_seconds": self.pause_seconds,
            "window": self.window,
            "flood_sockets": self.flood_sockets,
            "cores": asdict(self.cores),
            "machine": machine(),
            "rounds": [
                asdict(r)
                | {
                    "exactly_one_each": r.exactly_one_each,
                    "recorded": None if r.recorded is None else r.recorded.as_dict(),
                }
                for r in self.rounds
            ],
        }


def _row(first: str, *cells: str) -> str:
    return row(first, *cells, widths=(12, 10))


def _ms(value: float) -> str:
    return figure(value)


# --- the client (its own process) ----------------------------------------------------------------


class _Frame(msgspec.Struct):
    type: str
    pause_seconds: float = 0.0


_decode = msgspec.json.Decoder(_Frame).decode


class ClientError(RuntimeError):
    pass


@dataclass(slots=True)
class Cart:
    ws: ClientConnection
    sent: float = math.nan
    acked: float = math.nan
    offers: list[float] = field(default_factory=list)


def activity_frame(number: int) -> str:
    """A product view and an add to cart in one batch: the cart's last activity."""
    return (
        '{"type":"batch","events":['
        f'{{"id":"v-{number}","event":"product_view",'
        '"props":{"product_id":"sku-espresso","price":249.0}},'
        f'{{"id":"a-{number}","event":"add_to_cart",'
        '"props":{"product_id":"sku-espresso","price":249.0,"quantity":1}}]}'
    )


async def open_cart(url: str, opening: asyncio.Semaphore) -> tuple[Cart, float]:
    """A collector socket past its welcome frame, and the pause the server announced."""
    async with opening:
        # proxy=None: the benchmark talks to 127.0.0.1 only, whatever the environment says.
        ws = await connect(
            url,
            compression=None,
            open_timeout=60,
            close_timeout=5,
            ping_interval=None,
            proxy=None,
            max_queue=None,
        )
        welcome = _decode(await ws.recv())
    if welcome.type != "welcome":
        raise ClientError(f"the first frame is {welcome.type!r}, not welcome")
    return Cart(ws), welcome.pause_seconds


async def listen(cart: Cart) -> None:
    """Stamp the cart's ack and offers as they arrive, until the socket closes."""
    with contextlib.suppress(ConnectionClosed):
        async for message in cart.ws:
            at = time.perf_counter()
            kind = _decode(message).type
            if kind == "offer":
                cart.offers.append(at)
            elif kind == "ack":
                cart.acked = at
            else:
                raise ClientError(f"the server sent {kind!r}: {str(message)[:200]}")


async def send_activity(carts: Sequence[Cart], window: float) -> None:
    """One activity frame a cart, the sends spread evenly over `window` seconds."""
    start = time.perf_counter() + 0.01
    for number, cart in enumerate(carts):
        wait = start + window * number / len(carts) - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        cart.sent = time.perf_counter()
        await cart.ws.send(activity_frame(number))


async def probe_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How long one pass of the client's event loop takes: a frame's wait to be stamped."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0)
        lags.append(time.perf_counter() - start)
        await asyncio.sleep(LAG_PROBE_SECONDS)


async def wait_for_offers(carts: Sequence[Cart], pause: float) -> None:
    """Until the last cart's second after its deadline is over: a late or second offer counts."""
    last = max(cart.acked for cart in carts) + pause + ON_TIME_SECONDS + GRACE_SECONDS
    await asyncio.sleep(max(0.0, last - time.perf_counter()))


def round_figures(
    carts: Sequence[Cart], pause: float, lags: list[float], busy: float
) -> dict[str, Any]:
    firsts = [(cart, cart.offers[0]) for cart in carts if cart.offers]
    on_time = [
        cart
        for cart, first in firsts
        if len(cart.offers) == 1 and first - (cart.sent + pause) <= ON_TIME_SECONDS
    ]
    sends = [cart.sent for cart in carts]
    return {
        "carts": len(carts),
        "pause_seconds": pause,
        "offers": sum(len(cart.offers) for cart in carts),
        "offered": len(firsts),
        "on_time": len(on_time),
        "from_send_ms": [(first - cart.sent - pause) * 1e3 for cart, first in firsts],
        "from_ack_ms": [(first - cart.acked - pause) * 1e3 for cart, first in firsts],
        "ack_rtt_ms": [(cart.acked - cart.sent) * 1e3 for cart in carts],
        "activity_spread_ms": (max(sends) - min(sends)) * 1e3,
        "client_lag_ms": [lag * 1e3 for lag in lags],
        "client_core_busy": busy,
    }


async def run_client(url: str, *, carts: int, window: float) -> dict[str, Any]:
    """Open `carts` sockets, make each pause once, and time each offer from its deadline."""
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    opened = await asyncio.gather(
        *(open_cart(url, opening) for _ in range(carts)), return_exceptions=True
    )
    ready = [item for item in opened if not isinstance(item, BaseException)]
    listeners: list[asyncio.Task[None]] = []
    prober: asyncio.Task[None] | None = None
    try:
        failed = [item for item in opened if isinstance(item, BaseException)]
        if failed:
            raise ClientError(f"{len(failed)} of {carts} sockets did not open: {failed[0]!r}")
        pause = ready[0][1]
        ours = [cart for cart, _ in ready]
        listeners = [asyncio.create_task(listen(cart)) for cart in ours]
        stop, lags = asyncio.Event(), list[float]()
        prober = asyncio.create_task(probe_lag(stop, lags))
        with no_collector_pauses():
            await send_activity(ours, window)
            while any(math.isnan(cart.acked) for cart in ours):
                _raise_failures(listeners)
                await asyncio.sleep(0.01)  # bounded by the caller's timeout
            cpu, wall = time.process_time(), time.perf_counter()
            await wait_for_offers(ours, pause)
            busy = (time.process_time() - cpu) / (time.perf_counter() - wall)
        stop.set()
        await prober
        _raise_failures(listeners)
        return round_figures(ours, pause, lags, busy)
    finally:
        # Leaving closes every socket with 1000, so the server sees clean goodbyes.
        async with asyncio.timeout(30):
            await asyncio.gather(*(cart.ws.close() for cart, _ in ready), return_exceptions=True)
        others = [*listeners, *([prober] if prober else [])]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """The client's own garbage collector stays out of the timed part.

    With thousands of sockets, one full collection stops the client's loop for long enough
    to delay the stamps of the frames waiting behind it. The server keeps its collector.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()


def _raise_failures(listeners: Sequence[asyncio.Task[None]]) -> None:
    for listener in listeners:
        if listener.done() and not listener.cancelled() and listener.exception() is not None:
            raise ClientError(str(listener.exception()))


def client_main(args: argparse.Namespace) -> None:
    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.timeout):
            return await run_client(args.url, carts=args.carts, window=args.window)

    try:
        figures = asyncio.run(bounded())
    except (ClientError, WebSocketException, OSError, TimeoutError) as exc:
        sys.exit(f"client: {type(exc).__name__}: {exc}")
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")


# --- the timer floor (its own process) -------------------------------------------------------

ACTIVITY = frozenset(name for name, kind in EVENT_KINDS.items() if kind.activity)


async def timer_session(
    ws: ServerConnection, pause: float, sending: set[asyncio.Task[None]]
) -> None:
    """Ack each frame; each activity event (re)arms one timer that sends an offer frame."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def sent(task: asyncio.Task[None]) -> None:
        sending.discard(task)
        if not task.cancelled():
            task.exception()  # a socket closed meanwhile is the client's business, not an error

    def offer() -> None:
        frame = json.dumps({"type": "offer", "offer_id": "o-" + secrets.token_urlsafe(16)})
        task = loop.create_task(ws.send(frame))
        sending.add(task)
        task.add_done_callback(sent)

    await ws.send(json.dumps({"type": "welcome", "pause_seconds": pause}))
    try:
        async for message in ws:
            frame = json.loads(message)
            events = frame["events"] if frame.get("type") == "batch" else [frame]
            if any(event.get("event") in ACTIVITY for event in events):
                if timer is not None:
                    timer.cancel()
                timer = loop.call_at(loop.time() + pause, offer)
            await ws.send(json.dumps({"type": "ack", "ids": [event["id"] for event in events]}))
    except ConnectionClosed:
        pass  # the client's goodbye
    finally:
        if timer is not None:
            timer.cancel()


async def start_timer(host: str, port: int, pause: float) -> WebSocketServer:
    sending: set[asyncio.Task[None]] = set()
    # Compression off, as for the collector, whose daphne does not negotiate it.
    return await serve(
        lambda ws: timer_session(ws, pause, sending),
        host,
        port,
        compression=None,
        max_size=MAX_FRAME_BYTES,
        ping_interval=None,
    )


async def serve_timer(host: str, port: int, pause: float) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    server = await start_timer(host, port, pause)
    try:
        await stop
    finally:
        server.close()
        await server.wait_closed()


def timer_main(args: argparse.Namespace) -> None:
    asyncio.run(serve_timer(args.host, args.port, args.pause_seconds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    which = parser.add_subparsers(dest="which", required=True)
    timer = which.add_parser("timer", help="the timer floor server")
    timer.add_argument("--host", default=HOST)
    timer.add_argument("--port", type=int, required=True)
    timer.add_argument("--pause-seconds", type=float, required=True)
    client = which.add_parser("client", help="the carts; prints its figures as JSON")
    client.add_argument("--url", required=True)
    client.add_argument("--carts", type=int, required=True)
    client.add_argument("--window", type=float, required=True)
    client.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.which == "timer":
        timer_main(args)
    else:
        client_main(args)


# --- the benchmark (manage.py bench decisions) -------------------------------------------------


def decisions_env(workdir: Path, pause_seconds: float) -> dict[str, str]:
    """The collector's settings with every pause ending in an offer, as in production otherwise."""
    return bench_env(workdir) | {
        "PAUSE_SECONDS": f"{pause_seconds:g}",
        "HOLDOUT_PERCENT": "0",
        "OFFER_COOLDOWN_SECONDS": "0",
        "METRICS_TOKEN": "",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": HOST,
    }


OPEN_RULES = (
    "from offers.models import OfferRule; "
    "print(OfferRule.objects.update(min_risk=0, min_cart_value=0, daily_budget=1000000))"
)


def open_offer_rules(env: dict[str, str]) -> None:
    """Every rule matches every cart: each pause ends in an offer."""
    done = manage(env, "shell", "-c", OPEN_RULES, timeout=120)
    # The last line is the count of rules changed; shell may say other things before it.
    changed = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode or not changed.isdigit() or int(changed) == 0:
        raise BenchError(f"could not open the offer rules: {done.stdout}{done.stderr[-2000:]}")


def run_client_process(
    *, port: int, carts: int, window: float, pause_seconds: float, core: int | None
) -> dict[str, Any]:
    timeout = 120 + carts * 0.02 + window + pause_seconds + 30
    command = [
        sys.executable,
        "-m",
        "benchmarks.decisions",
        "client",
        f"--url=ws://{HOST}:{port}{PATH}",
        f"--carts={carts}",
        f"--window={window}",
        f"--timeout={timeout}",
    ]
    return run_pinned_client(command, core=core, timeout=timeout + 30, what="client")


def measured_round(server: str, figures: Mapping[str, Any]) -> Round:
    return Round(
        server=server,
        carts=figures["carts"],
        pause_seconds=figures["pause_seconds"],
        offers=figures["offers"],
        offered=figures["offered"],
        on_time=figures["on_time"],
        from_send=Spread.of(figures["from_send_ms"]),
        from_ack=Spread.of(figures["from_ack_ms"]),
        ack_rtt=Spread.of(figures["ack_rtt_ms"]),
        activity_spread_ms=figures["activity_spread_ms"],
        client_lag=Spread.of(figures["client_lag_ms"]),
        client_core_busy=figures["client_core_busy"],
    )


_BUCKET = re.compile(r'^liveoffers_decision_delay_seconds_bucket\{le="([^"]+)"\} (\S+)$')
_TOTAL = re.compile(r"^liveoffers_decision_delay_seconds_(count|sum) (\S+)$")


def server_metrics(port: int) -> str:
    """The server's /metrics, as Prometheus text."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def decision_delay(port: int) -> dict[str, float]:
    """The server's deadline-to-decision histogram, read from its /metrics."""
    return delay_histogram(server_metrics(port))


def delay_histogram(text: str) -> dict[str, float]:
    """Bucket bound (seconds, as written), "count" and "sum" -> value, from Prometheus text."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if match := _BUCKET.match(line) or _TOTAL.match(line):
            values[match.group(1)] = float(match.group(2))
    if "count" not in values:
        raise BenchError("/metrics has no liveoffers_decision_delay_seconds")
    return values


def events_accepted(port: int) -> float:
    """The server's count of events applied (liveoffers_events_accepted_total)."""
    for line in server_metrics(port).splitlines():
        if line.startswith("liveoffers_events_accepted_total "):
            return float(line.split()[1])
    raise BenchError("/metrics has no liveoffers_events_accepted_total")


@contextlib.contextmanager
def flooding(port: int, *, sockets: int, core: int | None) -> Iterator[None]:
    """The load client (benchmarks.clients.load) sending single-event frames over `sockets`
    sockets as fast as they are acknowledged, for as long as the block runs: acks in bulk
    beside a round's offers. It shares the round's client core, niced, so that it takes only
    what the round's client leaves."""

    def start() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        os.nice(10)

    command = [
        sys.executable,
        "-m",
        "benchmarks.clients.load",
        f"--url=ws://{HOST}:{port}{PATH}",
        "--batch=1",
        f"--connections={sockets}",
        f"--window={WINDOW_FRAMES}",
        "--warmup=0",
        "--seconds=3600",
    ]
    said = tempfile.TemporaryFile()  # noqa: SIM115  # closed below, after the process
    process = subprocess.Popen(
        command, cwd=BASE_DIR, stdout=subprocess.DEVNULL, stderr=said, preexec_fn=start
    )
    try:
        before = events_accepted(port)
        time.sleep(FLOOD_RAMP_SECONDS)
        if process.poll() is not None or events_accepted(port) == before:
            stop(process)
            said.seek(0)
            error = said.read().decode(errors="replace").strip()[-2000:]
            raise BenchError(f"the flood did not start: {error}")
        yield
    finally:
        stop(process)
        said.close()


def recorded_delay(port: int, before: Mapping[str, float], decisions: int) -> ServerDelay:
    """The histogram over a round, once it holds the round's decisions.

    A decision is counted once decided and, if it has reasons, explained: that trails the
    offers. Whether it is in the database says `decided_round`.
    """
    began = time.monotonic()
    while True:
        after = decision_delay(port)
        waited = time.monotonic() - began
        if after["count"] - before["count"] >= decisions:
            return server_delay(before, after, recorded_after=waited)
        if waited > RECORDS_TIMEOUT:
            raise BenchError(
                f"the server recorded {after['count'] - before['count']:.0f} of {decisions} "
                f"decisions within {RECORDS_TIMEOUT:g} s"
            )
        time.sleep(0.1)


def server_delay(
    before: Mapping[str, float], after: Mapping[str, float], *, recorded_after: float = 0.0
) -> ServerDelay:
    count = int(after["count"] - before["count"])
    within = {
        float(bound) * 1e3: (after[bound] - before.get(bound, 0.0)) / max(count, 1)
        for bound in after
        if bound not in ("count", "sum", "+Inf")
    }
    mean = (after["sum"] - before["sum"]) / max(count, 1) * 1e3
    return ServerDelay(count, mean, dict(sorted(within.items())), recorded_after)


# --- the record: how soon a round's decisions were all in the database ------------------------

Fetch = Callable[[LiteralString, tuple[Any, ...]], tuple[Any, ...] | None]


@contextlib.contextmanager
def reading(database_url: str) -> Iterator[Fetch]:
    """The first row of a query (parameters as `%s`) on the SQLite or PostgreSQL database of
    `database_url`, a connection of the calling thread's own; each query sees what is
    committed when it runs."""
    if database_url.startswith("sqlite:"):
        # isolation_level=None: no transaction held open between the polls
        conn = sqlite3.connect(
            database_url.removeprefix("sqlite:///"), timeout=10.0, isolation_level=None
        )
        try:
            yield lambda query, params: conn.execute(query.replace("%s", "?"), params).fetchone()
        finally:
            conn.close()
        return
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as pg:
        yield lambda query, params: pg.execute(query, params).fetchone()


def instant(value: datetime.datetime | str) -> float:
    """A `Decision.at` as PostgreSQL gives it (aware) or SQLite (ISO text, UTC), in seconds."""
    moment = datetime.datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def last_decision_id(database_url: str) -> int:
    with reading(database_url) as fetch:
        row = fetch("SELECT coalesce(max(id), 0) FROM offers_decision", ())
    return int(row[0]) if row else 0


def watch_records(database_url: str, after: int, expected: int, stopping: threading.Event) -> float:
    """The wall-clock time at which the database first held `expected` decisions after `after`."""
    with reading(database_url) as fetch:
        while not stopping.is_set():
            row = fetch("SELECT count(*) FROM offers_decision WHERE id > %s", (after,))
            if row and row[0] >= expected:
                return time.time()
            stopping.wait(RECORD_POLL_SECONDS)
    raise BenchError("stopped before every decision was recorded")


def recorded_since(database_url: str, after: int, all_in_at: float) -> Recorded:
    with reading(database_url) as fetch:
        decisions = fetch(
            "SELECT count(*), count(DISTINCT pause_key), "
            "count(*) FILTER (WHERE outcome = 'offer'), min(at), max(at) "
            "FROM offers_decision WHERE id > %s",
            (after,),
        )
        offers = fetch("SELECT count(*) FROM offers_offer WHERE decision_id > %s", (after,))
    if decisions is None or offers is None or decisions[3] is None:
        raise BenchError("the round recorded no decision")
    count, pause_keys, offered, first, last = decisions
    return Recorded(
        decisions=count,
        pause_keys=pause_keys,
        offers=offered,
        offer_rows=offers[0],
        decided_over=instant(last) - instant(first),
        recorded_after=all_in_at - instant(first),
    )


def decided_round(
    *, database_url: str, run_client: Callable[[], Round], expected: int
) -> tuple[Round, Recorded]:
    """Run the client while a thread watches the database fill with the round's decisions."""
    after = last_decision_id(database_url)
    stopping = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        watching = pool.submit(watch_records, database_url, after, expected, stopping)
        try:
            measured = run_client()
            all_in_at = watching.result(timeout=RECORDS_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise BenchError(
                f"the database did not hold the round's {expected:,} decisions within "
                f"{RECORDS_TIMEOUT:g} s of its end"
            ) from None
        finally:
            stopping.set()
    return measured, recorded_since(database_url, after, all_in_at)


@contextlib.contextmanager
def serving(server: Server, *, env: dict[str, str], cores: Cores, workdir: Path) -> Iterator[int]:
    with running_server(server, env=env, core=cores.server, log=workdir / f"{server.key}.log") as (
        _,
        port,
    ):
        yield port


def measure_server(
    server: Server,
    report: DecisionsReport,
    *,
    carts: Sequence[int],
    env: dict[str, str],
    workdir: Path,
    progress: Progress,
) -> None:
    progress(f"{server.label}: starting")
    with serving(server, env=env, cores=report.cores, workdir=workdir) as port:

        def client(count: int) -> Round:
            figures = run_client_process(
                port=port,
                carts=count,
                window=report.window if count > WARMUP_CARTS else 0.0,
                pause_seconds=report.pause_seconds,
                core=report.cores.client,
            )
            return measured_round(server.key, figures)

        def recorded_round(count: int) -> Round:
            """The project's round, and how soon its decisions were all in the database."""
            measured, recorded = decided_round(
                database_url=env["DATABASE_URL"],
                run_client=lambda: client(count),
                expected=count,
            )
            return dataclasses.replace(measured, recorded=recorded)

        project = server in PROJECTS
        # The warm-up also proves the setup: the model is loaded and every pause gets an offer;
        # and the project's warm-up decisions are all in the database before the first round.
        warmup = recorded_round(WARMUP_CARTS) if project else client(WARMUP_CARTS)
        if not warmup.exactly_one_each:
            raise BenchError(
                f"{server.label}: {warmup.offers} offers for {WARMUP_CARTS} warm-up carts "
                f"({warmup.on_time} on time); see {workdir / (server.key + '.log')}"
            )
        for count in carts:
            if not project:
                measured = client(count)
            else:
                before = decision_delay(port)
                measured = recorded_round(count)
                delay = recorded_delay(port, before, count)
                measured = dataclasses.replace(measured, server_delay=delay)
                recorded = measured.recorded
                assert recorded is not None
                progress(
                    f"{server.label}, {count:,} carts: every decision in the database "
                    f"{recorded.recorded_after:.2f} s after the first, "
                    f"{recorded.after_last:.2f} s after the last; counted by the histogram "
                    f"{delay.recorded_after:.1f} s after the client's last second"
                )
            progress(
                f"{server.label}, {count:,} carts: {measured.on_time:,} on time, p50 "
                f"{_ms(measured.from_send.p50)} ms, p99 {_ms(measured.from_send.p99)} ms, max "
                f"{_ms(measured.from_send.max)} ms (from the send)"
            )
            report.rounds.append(measured)
        if server is PROJECT and report.flood_sockets:
            for count in carts:
                report.rounds.append(flooded_round(port, count, report, client, progress))


def flooded_round(
    port: int,
    count: int,
    report: DecisionsReport,
    client: Callable[[int], Round],
    progress: Progress,
) -> Round:
    """A round of `count` carts while the flood runs: do its offers wait behind the acks?"""
    progress(f"project, {count:,} carts, {report.flood_sockets} sockets flooding it with acks")
    with flooding(port, sockets=report.flood_sockets, core=report.cores.client):
        events, began = events_accepted(port), time.perf_counter()
        measured = client(count)
        # the round's own events are two a cart
        flood = (events_accepted(port) - events - 2 * count) / (time.perf_counter() - began)
    progress(
        f"project+flood, {count:,} carts: {measured.on_time:,} on time, p50 "
        f"{_ms(measured.from_send.p50)} ms, p99 {_ms(measured.from_send.p99)} ms "
        f"({flood:,.0f} flood events/s)"
    )
    return dataclasses.replace(measured, server=FLOODED, flood_events_per_second=flood)


def run(options: Mapping[str, Any], progress: Progress) -> DecisionsReport:
    report = DecisionsReport(
        pause_seconds=float(options["pause_seconds"]),
        window=float(options["window"]),
        cores=Cores.pick(),
        flood_sockets=int(options["flood"]),
    )
    progress(report.cores.describe())
    with tempfile.TemporaryDirectory(prefix="liveoffers-bench-") as tmp:
        workdir = Path(tmp)
        env = decisions_env(workdir, report.pause_seconds)
        progress("preparing the database (migrate, bootstrap_demo trains the model)")
        prepare_database(env)
        open_offer_rules(env)
        for server in (timer_server(report.pause_seconds), *PROJECTS):
            measure_server(
                server,
                report,
                carts=options["carts"],
                env=env,
                workdir=workdir,
                progress=progress,
            )
    return report


def add_round_arguments(parser: ArgumentParser, *, pause_help: str, window_help: str) -> None:
    """`--pause-seconds` and `--window` of a round of carts, as `bench redis` takes them too."""
    parser.add_argument(
        "--pause-seconds", type=bounded_float(0.5, 10), default=1.0, help=pause_help
    )
    parser.add_argument("--window", type=bounded_float(0, 10), default=0.5, help=window_help)


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--carts",
        type=bounded_ints(1, 10_000),
        default=[200, 2000],
        help="carts pausing together, comma-separated (200,2000)",
    )
    parser.add_argument(
        "--flood",
        type=bounded_int(0, 256),
        default=8,
        help="sockets flooding the default server with single-event frames during one more "
        "round a carts count (8; 0: no such rounds)",
    )
    add_round_arguments(
        parser,
        pause_help="PAUSE_SECONDS of both servers (1)",
        window_help="seconds over which the carts' last activity is spread (0.5; 0: all at once)",
    )


BENCHMARK = Benchmark(
    help="pause deadline to offer frame, p50/p99 with N carts pausing together, against a timer",
    add_arguments=add_arguments,
    run=run,
)


if __name__ == "__main__":
    main()
