"""`bench layer`: offers through Redis mode's channel layer to real collector sockets.

For each channels-redis layer (`CHANNEL_LAYER=pubsub`, then `core`), one `manage.py serve
--no-worker` holds N collector sockets, opened by a client process (`python -m
benchmarks.layer client`) that stamps each offer frame as it arrives. This process plays the
`runstream` workers: K senders, each with a layer of its own as each worker has, send
`offer.push` messages to the sessions' groups one after another, as `LayerDelivery` does.
Measured, for each layer:

- one at a time: from `group_send` to the frame at the client, with nothing queued, and what
  `group_send` itself takes (a worker sends its offers one after another);
- bursts: B offers at once from the K senders: how fast they go out, how fast they arrive (the
  front end's drain rate), how late the last ones are, and the front end's CPU time per offer
  (the figure least swayed by whatever else the machine runs);
- a stalled front end (SIGSTOP, longer than `--expiry`): what reaches its sockets once it runs;
- a front end gone (SIGKILL): what Redis keeps for its sockets, and for how long;
- `core` only: a burst of 3 x C against capacity C: after how many messages channels-redis
  starts dropping them (`liveoffers_channel_layer_drops_total` of this process) and how many.

Server on one core, client on another when the machine has two; the senders and Redis share
the machine. Redis: an empty logical database of its own (`--redis-url`), flushed when done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from argparse import ArgumentParser
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias

import redis.asyncio as aioredis
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks import BenchError, Benchmark, Progress, bounded_int, bounded_ints
from benchmarks.decisions import Spread
from benchmarks.harness import (
    BASE_DIR,
    HOST,
    PATH,
    Cores,
    Server,
    bench_env,
    cpu_seconds,
    figure,
    machine,
    on_redis,
    pinned,
    prepare_database,
    row,
    running_server,
    throwaway_redis,
)

# Not the tests' databases (10, 12, 14 and 15) nor `bench redis`'s (13).
REDIS_URL = "redis://127.0.0.1:6379/11"
LAYERS = ("pubsub", "core")
FRONT_END = Server("front-end", "serve --no-worker", ("manage.py", "serve", "--no-worker"))
# daphne listens with a backlog of 50.
OPENING_AT_ONCE = 32
PING_GAP_SECONDS = 0.01
# How long the client waits for more once frames stop coming.
QUIET_SECONDS = 2.0
DROPS = "liveoffers_channel_layer_drops_total"
# core's expiry for the bursts: out of the way, so that only capacity drops messages.
BURST_EXPIRY = 600

Layer: TypeAlias = RedisChannelLayer | RedisPubSubChannelLayer


# --- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrivals:
    """What the client saw since it was last asked."""

    count: int
    latency_ms: Spread  # group_send called to frame received
    first: float  # time.time() of the first and last arrival
    last: float
    numbers: frozenset[int]  # each offer's number in its burst

    @classmethod
    def of(cls, figures: Mapping[str, Any]) -> Arrivals:
        latencies = figures["latencies_ms"]
        return cls(
            len(latencies),
            Spread.of(latencies),
            figures["first"],
            figures["last"],
            frozenset(figures["numbers"]),
        )

    def first_missing(self, sent: int) -> int | None:
        """The number of the first offer that did not arrive: as many were sent before it."""
        return next((n for n in range(sent) if n not in self.numbers), None)


@dataclass(frozen=True, slots=True)
class Ping:
    messages: int
    latency_ms: Spread
    group_send_ms: Spread


@dataclass(frozen=True, slots=True)
class Burst:
    messages: int
    senders: int
    sent_per_second: float  # first send to the last send's return
    arrived: int
    arrived_per_second: float  # first send to the last arrival
    latency_ms: Spread
    dropped: int  # as channels-redis reported them
    front_end_cpu_ms: float  # the front end's CPU time per offer that arrived


@dataclass(frozen=True, slots=True)
class CapacityRun:
    capacity: int
    burst: Burst
    first_drop_after: int | None  # offers sent before the first that did not arrive


@dataclass(frozen=True, slots=True)
class Stall:
    seconds: float
    sent: int
    arrived: int  # once the front end ran again
    dropped: int


@dataclass(frozen=True, slots=True)
class Gone:
    sent: int
    dropped: int
    held_messages: int  # in Redis for the dead front end's sockets, just after
    held_bytes: int
    held_for: float | None  # seconds from the last message until Redis let them go
    memberships_ttl: int  # seconds the dead sockets stay in their sessions' groups


@dataclass
class LayerFigures:
    layer: str
    ping: Ping
    bursts: list[Burst] = field(default_factory=list)
    capacities: list[CapacityRun] = field(default_factory=list)
    stall: Stall | None = None
    gone: Gone | None = None


@dataclass
class LayerReport:
    sockets: int
    senders: int
    expiry: int
    cores: Cores
    redis: str
    layers: list[LayerFigures] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            f"layer (offers through the channel layer to {self.sockets:,} collector sockets on "
            f"one serve --no-worker; {self.senders} senders; {self.cores.describe()}; "
            f"Redis {self.redis})",
            _row("", *(figures.layer for figures in self.layers)),
            _row(
                "one at a time p50/p99 ms",
                *(_spread(f.ping.latency_ms) for f in self.layers),
            ),
            _row("group_send p50/p99 ms", *(_spread(f.ping.group_send_ms) for f in self.layers)),
        ]
        for n, burst in enumerate(self.layers[0].bursts):
            pairs = [f.bursts[n] for f in self.layers]
            rows += [
                f"burst of {burst.messages:,} from {burst.senders} senders:",
                _row("  sent/s", *(f"{b.sent_per_second:,.0f}" for b in pairs)),
                _row("  arrived/s", *(f"{b.arrived_per_second:,.0f}" for b in pairs)),
                _row("  front end CPU ms/offer", *(f"{b.front_end_cpu_ms:.2f}" for b in pairs)),
                _row("  p50/p99/max ms", *(_spread(b.latency_ms, full=True) for b in pairs)),
                _row("  arrived, dropped", *(f"{b.arrived:,}, {b.dropped:,}" for b in pairs)),
            ]
        for figures in self.layers:
            if figures.stall is not None:
                stall = figures.stall
                rows.append(
                    f"{figures.layer}: front end stopped {stall.seconds:g} s (expiry "
                    f"{self.expiry} s): {stall.arrived:,} of {stall.sent:,} arrived once it ran, "
                    f"{stall.dropped:,} reported dropped"
                )
            if figures.gone is not None:
                rows.append(f"{figures.layer}: front end gone: {_gone(figures.gone)}")
            for run in figures.capacities:
                burst = run.burst
                first = (
                    "none dropped"
                    if run.first_drop_after is None
                    else f"first dropped after {run.first_drop_after:,} sent"
                )
                rows.append(
                    f"{figures.layer}: capacity {run.capacity:,}, burst of {burst.messages:,}: "
                    f"{first}; {burst.dropped:,} dropped, {burst.arrived:,} arrived at "
                    f"{burst.arrived_per_second:,.0f}/s, sent at {burst.sent_per_second:,.0f}/s"
                )
        rows.append(
            "one at a time: group_send to the frame at the client, nothing queued; burst: "
            "sent/s from the first send to the last send's return, arrived/s to the last "
            "arrival (the front end's drain rate when below sent/s), latency from each send; "
            "dropped: as channels-redis reported (liveoffers_channel_layer_drops_total)"
        )
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sockets": self.sockets,
            "senders": self.senders,
            "expiry": self.expiry,
            "cores": asdict(self.cores),
            "redis": self.redis,
            "machine": machine(),
            "layers": [asdict(figures) for figures in self.layers],
        }


def _row(first: str, *cells: str) -> str:
    return row(first, *cells, widths=(26, 24))


def _spread(spread: Spread, *, full: bool = False) -> str:
    values = (spread.p50, spread.p99, spread.max) if full else (spread.p50, spread.p99)
    return " / ".join(figure(value) for value in values)


def _gone(gone: Gone) -> str:
    if not gone.held_messages:
        return f"{gone.sent:,} sent, nothing kept in Redis"
    held_for = "still there" if gone.held_for is None else f"for {gone.held_for:.1f} s"
    return (
        f"{gone.sent:,} sent, {gone.held_messages:,} kept in Redis ({gone.held_bytes:,} bytes) "
        f"{held_for} after the last, {gone.dropped:,} reported dropped; its sockets stay in "
        f"their groups {gone.memberships_ttl:,} s"
    )


# --- the client (its own process) ----------------------------------------------------------------


@dataclass(slots=True)
class Stamps:
    latencies: list[float] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


async def open_socket(url: str, opening: asyncio.Semaphore) -> tuple[ClientConnection, str]:
    async with opening:
        ws = await connect(
            url, compression=None, open_timeout=60, ping_interval=None, proxy=None, max_queue=None
        )
        welcome = json.loads(await ws.recv())
    if welcome.get("type") != "welcome":
        raise BenchError(f"the first frame is {welcome.get('type')!r}, not welcome")
    return ws, str(welcome["session"])


async def listen(ws: ClientConnection, stamps: Stamps) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            at = time.time()
            frame = json.loads(message)
            if frame.get("type") != "offer":
                continue
            stamps.latencies.append((at - frame["sent"]) * 1e3)
            stamps.numbers.append(frame["n"])
            stamps.first = stamps.first or at
            stamps.last = at
            stamps.arrived.set()


async def collect(stamps: Stamps, expect: int, quiet: float) -> dict[str, Any]:
    """Wait for `expect` frames, or until none came for `quiet` seconds; then start afresh."""
    while len(stamps.latencies) < expect:
        stamps.arrived.clear()
        try:
            await asyncio.wait_for(stamps.arrived.wait(), quiet)
        except TimeoutError:
            break
    figures = {
        "latencies_ms": stamps.latencies,
        "numbers": stamps.numbers,
        "first": stamps.first,
        "last": stamps.last,
    }
    stamps.latencies, stamps.numbers, stamps.first, stamps.last = [], [], 0.0, 0.0
    return figures


async def run_client(url: str, sockets: int) -> None:
    """Open the sockets and say their sessions; then answer each `collect` line on stdin."""
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    opened = await asyncio.gather(*(open_socket(url, opening) for _ in range(sockets)))
    stamps = Stamps()
    listeners = [asyncio.create_task(listen(ws, stamps)) for ws, _ in opened]
    _say({"sessions": [session for _, session in opened]})
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            command = json.loads(line)
            _say(await collect(stamps, command["expect"], command["quiet"]))
    finally:
        async with asyncio.timeout(30):
            await asyncio.gather(*(ws.close() for ws, _ in opened), return_exceptions=True)
        for task in listeners:
            task.cancel()


def _say(figures: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()


class Client:
    """The client process: its sessions, and what arrived since the last `collect`."""

    def __init__(self, url: str, sockets: int, core: int | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.layer", "client", url, str(sockets)],
            cwd=BASE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=pinned(core),
        )
        self.sessions: list[str] = self._read()["sessions"]

    def collect(self, expect: int, quiet: float = QUIET_SECONDS) -> Arrivals:
        stdin = self._pipe(self.process.stdin)
        stdin.write(json.dumps({"expect": expect, "quiet": quiet}) + "\n")
        stdin.flush()
        return Arrivals.of(self._read())

    def close(self) -> None:
        """End of stdin: the client closes its sockets and exits."""
        with contextlib.suppress(OSError):
            self._pipe(self.process.stdin).close()
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdout, self.process.stderr):
            self._pipe(pipe).close()

    def _read(self) -> dict[str, Any]:
        line = self._pipe(self.process.stdout).readline()
        if not line:
            self.process.kill()
            stderr = self._pipe(self.process.stderr).read()
            raise BenchError(f"the client stopped: {stderr.strip()[-2000:]}")
        figures: dict[str, Any] = json.loads(line)
        return figures

    @staticmethod
    def _pipe(pipe: IO[str] | None) -> IO[str]:
        assert pipe is not None  # opened with PIPE
        return pipe


@contextlib.contextmanager
def client_process(url: str, sockets: int, core: int | None) -> Iterator[Client]:
    client = Client(url, sockets, core)
    try:
        yield client
    finally:
        client.close()


# --- the senders (this process, as the workers) ------------------------------------------------


def make_layer(kind: str, url: str, *, capacity: int, expiry: int) -> Layer:
    """The layer a worker would have with `CHANNEL_LAYER=kind` (config/settings.py)."""
    if kind == "pubsub":
        return RedisPubSubChannelLayer(hosts=[url])
    return RedisChannelLayer(hosts=[url], capacity=capacity, expiry=expiry)


async def close_layer(layer: Layer) -> None:
    if isinstance(layer, RedisChannelLayer):
        await layer.close_pools()
    else:
        await layer.flush()


def drops() -> int:
    return int(REGISTRY.get_sample_value(DROPS) or 0)


@contextlib.contextmanager
def drops_unprinted() -> Iterator[None]:
    """Count drops without a warning line for each: thousands, by design, in a capacity run."""
    logger = logging.getLogger("channels_redis.core")
    quiet = logging.NullHandler()
    logger.addHandler(quiet)
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = True
        logger.removeHandler(quiet)


def group_of(session: str) -> str:
    # Django's, so imported here: the client process has no settings.
    from streaming.delivery import session_group

    return session_group(session)


async def send_offer(layer: Layer, session: str, number: int = 0) -> None:
    text = json.dumps({"type": "offer", "sent": time.time(), "n": number})
    await layer.group_send(group_of(session), {"type": "offer.push", "text": text})


async def ping(layer: Layer, client: Client, messages: int) -> Ping:
    took = []
    for n in range(messages):
        start = time.perf_counter()
        await send_offer(layer, client.sessions[n % len(client.sessions)])
        took.append((time.perf_counter() - start) * 1e3)
        await asyncio.sleep(PING_GAP_SECONDS)
    arrivals = client.collect(messages)
    return Ping(arrivals.count, arrivals.latency_ms, Spread.of(took))


async def burst(
    layers: Sequence[Layer], client: Client, messages: int, front_end: int
) -> tuple[Burst, Arrivals]:
    """`messages` offers from one sender a layer, each sending its share one after another."""
    dropped_before = drops()
    cpu_before = cpu_seconds(front_end)

    async def sender(layer: Layer, first: int) -> None:
        for n in range(first, messages, len(layers)):
            await send_offer(layer, client.sessions[n % len(client.sessions)], n)

    start = time.time()
    await asyncio.gather(*(sender(layer, first) for first, layer in enumerate(layers)))
    sent_in = time.time() - start
    dropped = drops() - dropped_before
    arrivals = client.collect(messages - dropped)
    cpu = cpu_seconds(front_end) - cpu_before
    measured = Burst(
        messages=messages,
        senders=len(layers),
        sent_per_second=messages / sent_in,
        arrived=arrivals.count,
        arrived_per_second=arrivals.count / max(arrivals.last - start, 1e-9),
        latency_ms=arrivals.latency_ms,
        dropped=dropped,
        front_end_cpu_ms=cpu * 1e3 / max(arrivals.count, 1),
    )
    return measured, arrivals


# --- one layer ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setup:
    env: dict[str, str]
    workdir: Path
    redis_url: str
    cores: Cores
    options: Mapping[str, Any]


def measure_layer(kind: str, setup: Setup, progress: Progress) -> LayerFigures:
    options = setup.options
    env = setup.env | {"CHANNEL_LAYER": kind}
    log = setup.workdir / f"{kind}.log"
    progress(f"{kind}: starting a front end and {options['sockets']:,} sockets")
    with (
        running_server(FRONT_END, env=env, core=setup.cores.server, log=log) as (process, port),
        client_process(
            f"ws://{HOST}:{port}{PATH}", options["sockets"], setup.cores.client
        ) as client,
    ):
        return asyncio.run(measure_front_end(kind, setup, process, client, progress))


async def measure_front_end(
    kind: str,
    setup: Setup,
    process: subprocess.Popen[bytes],
    client: Client,
    progress: Progress,
) -> LayerFigures:
    options, url = setup.options, setup.redis_url
    layers = [
        make_layer(kind, url, capacity=options["capacity"], expiry=BURST_EXPIRY)
        for _ in range(options["senders"])
    ]
    # For the stalled and gone front end: the expiry under study.
    short = make_layer(kind, url, capacity=options["capacity"], expiry=options["expiry"])
    try:
        figures = LayerFigures(kind, await ping(layers[0], client, options["pings"]))
        progress(f"{kind}: one at a time, p50 {figures.ping.latency_ms.p50:.1f} ms")
        for messages in options["bursts"]:
            measured, _ = await burst(layers, client, messages, process.pid)
            figures.bursts.append(measured)
            progress(
                f"{kind}: burst of {messages:,}: {measured.arrived:,} arrived at "
                f"{measured.arrived_per_second:,.0f}/s, {measured.dropped:,} dropped"
            )
        if kind == "core":
            for capacity in options["capacities"]:
                run = await capacity_run(capacity, setup, client, process.pid)
                figures.capacities.append(run)
                progress(
                    f"{kind}: capacity {capacity:,}: {run.burst.dropped:,} of "
                    f"{run.burst.messages:,} dropped"
                )
        figures.stall = await stall(short, process, client, options["stall"])
        progress(f"{kind}: stalled front end, {figures.stall.arrived} arrived")
        figures.gone = await gone(short, process, client, url)
        progress(f"{kind}: front end gone, {figures.gone.held_messages:,} messages kept")
        return figures
    finally:
        for layer in [*layers, short]:
            await close_layer(layer)


async def capacity_run(capacity: int, setup: Setup, client: Client, front_end: int) -> CapacityRun:
    options = setup.options
    layers = [
        make_layer("core", setup.redis_url, capacity=capacity, expiry=BURST_EXPIRY)
        for _ in range(options["senders"])
    ]
    try:
        measured, arrivals = await burst(layers, client, 3 * capacity, front_end)
    finally:
        for layer in layers:
            await close_layer(layer)
    return CapacityRun(capacity, measured, arrivals.first_missing(measured.messages))


async def stall(
    layer: Layer, process: subprocess.Popen[bytes], client: Client, seconds: float
) -> Stall:
    """Offers sent while the front end is stopped (a long pause of its loop, a frozen VM)."""
    sent = len(client.sessions)
    dropped_before = drops()
    process.send_signal(signal.SIGSTOP)
    try:
        for session in client.sessions:
            await send_offer(layer, session)
        await asyncio.sleep(seconds)
    finally:
        process.send_signal(signal.SIGCONT)
    arrivals = client.collect(sent)
    return Stall(seconds, sent, arrivals.count, drops() - dropped_before)


async def gone(layer: Layer, process: subprocess.Popen[bytes], client: Client, url: str) -> Gone:
    """Offers sent to the sockets of a front end that was killed, before their pages reconnect."""

    async def kill_and_send() -> tuple[int, float]:
        process.send_signal(signal.SIGKILL)
        process.wait()
        dropped_before = drops()
        for session in client.sessions:
            await send_offer(layer, session)
        return drops() - dropped_before, time.monotonic()

    if not isinstance(layer, RedisChannelLayer):
        dropped, _ = await kill_and_send()
        return Gone(len(client.sessions), dropped, 0, 0, None, 0)
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        # The dead front end's sockets share one sorted set: prefix + "specific.<its id>!".
        group = f"{layer.prefix}:group:{group_of(client.sessions[0])}"
        queue = layer.prefix + layer.non_local_name(str((await redis.zrange(group, 0, 0))[0]))
        dropped, last = await kill_and_send()
        held = int(await redis.zcard(queue))
        held_bytes = int(await redis.memory_usage(queue) or 0)
        memberships_ttl = int(await redis.ttl(group))
        held_for = None
        while time.monotonic() - last < layer.expiry + 5:
            if not await redis.exists(queue):
                held_for = time.monotonic() - last
                break
            await asyncio.sleep(0.1)
        return Gone(len(client.sessions), dropped, held, held_bytes, held_for, memberships_ttl)
    finally:
        await redis.aclose()


# --- the benchmark -----------------------------------------------------------------------------


# A front end needs the site its sockets name, and no model: it decides nothing.
DEMO_SITE = (
    "from offers.models import Site; Site.objects.get_or_create(key='demo', "
    "defaults={'name': 'Demo shop', 'allowed_origins': '*'})"
)


def redis_version(url: str) -> str:
    async def info(client: aioredis.Redis) -> str:
        return str((await client.info("server"))["redis_version"])

    where = urllib.parse.urlsplit(url)
    return f"{on_redis(url, info)} at {where.netloc}{where.path}"


def run(options: Mapping[str, Any], progress: Progress) -> LayerReport:
    url = options["redis_url"]
    cores = Cores.pick()
    with throwaway_redis(url), tempfile.TemporaryDirectory(prefix="liveoffers-bench-") as tmp:
        report = LayerReport(
            sockets=options["sockets"],
            senders=options["senders"],
            expiry=options["expiry"],
            cores=cores,
            redis=redis_version(url),
        )
        progress(cores.describe())
        workdir = Path(tmp)
        env = bench_env(workdir) | {"REDIS_URL": url}
        progress("preparing the front end's database (migrate, the demo site)")
        prepare_database(env, then=("shell", "-v", "0", "-c", DEMO_SITE))
        setup = Setup(env, workdir, url, cores, options)
        with drops_unprinted():
            for kind in LAYERS:
                report.layers.append(measure_layer(kind, setup, progress))
    return report


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--sockets", type=bounded_int(1, 10_000), default=1000, help="collector sockets (1000)"
    )
    parser.add_argument(
        "--pings",
        type=bounded_int(1, 10_000),
        default=300,
        help="offers sent one at a time, 10 ms apart (300)",
    )
    parser.add_argument(
        "--senders", type=bounded_int(1, 16), default=2, help="senders, as workers (2)"
    )
    parser.add_argument(
        "--bursts",
        type=bounded_ints(1, 100_000),
        default=[1000, 5000],
        help="offers sent at once, comma-separated (1000,5000)",
    )
    parser.add_argument(
        "--capacities",
        type=bounded_ints(1, 100_000),
        default=[100, 1000, 4000],
        help="core's capacities tried with a burst of 3 x each (100,1000,4000)",
    )
    parser.add_argument(
        "--capacity",
        type=bounded_int(1, 1_000_000),
        default=100_000,
        help="core's capacity for the other parts, out of the way (100000)",
    )
    parser.add_argument(
        "--expiry",
        type=bounded_int(1, 600),
        default=2,
        help="core's expiry for the stalled and gone parts, short to be quick (2)",
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=4.0,
        help="seconds the front end is stopped, longer than --expiry (4)",
    )
    parser.add_argument(
        "--redis-url",
        default=REDIS_URL,
        help=f"an empty Redis database of its own; flushed when done ({REDIS_URL})",
    )


BENCHMARK = Benchmark(
    help="offers through the channel layer (pubsub, core) to real sockets: latency, bursts, "
    "drops at capacity, a stalled and a dead front end (needs Redis)",
    add_arguments=add_arguments,
    run=run,
)


def main() -> None:
    parser = argparse.ArgumentParser(description="bench layer's client process")
    commands = parser.add_subparsers(dest="command", required=True)
    client = commands.add_parser("client", help="open the sockets; answer `collect` on stdin")
    client.add_argument("url")
    client.add_argument("sockets", type=int)
    args = parser.parse_args()
    asyncio.run(run_client(args.url, args.sockets))


if __name__ == "__main__":
    main()
