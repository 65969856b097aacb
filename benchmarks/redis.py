"""`bench redis`: Redis mode on this machine's Redis and PostgreSQL, beside embedded mode.

Three parts, in one run:

- ingest: events/s acknowledged through `/ws/collect/` by 1 and by 2 `serve --no-worker` front
  ends, and by embedded `serve` (the baseline), with the load client of `bench ingest`
  (benchmarks.clients.load) driving every front end from one process;
- decisions: from a pause's deadline to the `offer` frame at the client, with the client of
  `bench decisions` and every pause made to end in an offer, behind one `serve --no-worker`
  with 1 and with 2 `runstream` workers, and behind embedded `serve`; and, from PostgreSQL, the
  decisions made a second and how soon every one was recorded;
- memory: Redis memory per live session (`INFO` used_memory before and after, and `MEMORY
  USAGE` of the keys) with N realistic sessions held by a `RedisStore`, beside a `MemoryStore`.

It works in a throw-away Redis logical database (refused unless empty, flushed between parts
and at the end) and a throw-away PostgreSQL database it creates, prepares with `migrate` and
`bootstrap_demo`, and drops. Every process it starts is stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from argparse import ArgumentParser
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psycopg
import redis.asyncio as aioredis
from psycopg import sql
from redis.exceptions import RedisError
from websockets.exceptions import WebSocketException

from benchmarks import (
    BenchError,
    Benchmark,
    Progress,
    bounded_float,
    bounded_int,
    bounded_ints,
)
from benchmarks.clients import load
from benchmarks.decisions import (
    WARMUP_CARTS,
    Round,
    decisions_env,
    measured_round,
    open_offer_rules,
    run_client_process,
)
from benchmarks.ingest import (
    BASE_DIR,
    FRAMES,
    HOST,
    PATH,
    START_TIMEOUT,
    WARMUP_SECONDS,
    WINDOW_FRAMES,
    Server,
    machine,
    prepare_database,
    run_pinned_client,
    running_server,
    stop,
)
from benchmarks.memory import GIB, MemoryFigures, measure_memory, shopper_frames
from offers.tokens import new_session_id
from streaming.decider import OfferMade, offer_frame
from streaming.policy import new_offer_code, new_offer_id
from streaming.protocol import Event, decode_frame
from streaming.redis_store import RedisStore

# Not the tests' databases (14 and 15): a run and the test suite may share the machine's Redis.
REDIS_URL = "redis://127.0.0.1:6379/13"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# Ingest leaves pauses out of the way: no worker decides during the measurement.
INGEST_PAUSE_SECONDS = 30.0
# How often the database is asked how many decisions it holds, while a round runs.
RECORD_POLL_SECONDS = 0.02
RECORDS_TIMEOUT = 120.0
# Sessions filled at once for the memory figure: their calls go out pipelined.
FILL_AT_ONCE = 256

EMBEDDED = "embedded"
REDIS = "redis"
T = TypeVar("T")
EMBEDDED_SERVE = ("manage.py", "serve")
FRONT_END_SERVE = ("manage.py", "serve", "--no-worker")


# --- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestRun:
    """One load run: events/s, and the CPU each side used, in cores (1.0: one core's time)."""

    mode: str
    front_ends: int
    frames: str
    events_per_second: float
    front_ends_busy: float  # the front ends together
    client_busy: float
    redis_busy: float
    # The rest of the machine's busy time: other work, and the kernel's for the loopback traffic.
    others_busy: float

    @property
    def events_per_front_end_core(self) -> float:
        """Events per second of front-end CPU: what a front end does with a core of its own."""
        return self.events_per_second / self.front_ends_busy if self.front_ends_busy else 0.0

    @property
    def redis_us_per_event(self) -> float:
        return self.redis_busy / self.events_per_second * 1e6 if self.events_per_second else 0.0


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


@dataclass(frozen=True, slots=True)
class DecisionRun:
    mode: str
    workers: int  # 0: embedded, where the server decides
    round: Round
    recorded: Recorded
    # The rest of the machine's busy time during the round, in cores (see CpuWatch).
    others_busy: float = 0.0

    @property
    def every_cart_one_offer(self) -> bool:
        recorded = self.recorded
        counts = (recorded.decisions, recorded.pause_keys, recorded.offers, recorded.offer_rows)
        return self.round.exactly_one_each and all(n == self.round.carts for n in counts)

    @property
    def due_per_second(self) -> float | None:
        """Pauses falling due a second: the carts over the spread of their last activity."""
        spread = self.round.activity_spread_ms / 1e3
        return self.round.carts / spread if spread > 0 else None


@dataclass(frozen=True, slots=True)
class RedisMemory:
    """Redis memory held for N live sessions, and for an offer each, in bytes."""

    sessions: int
    events_per_session: int
    used_memory: int  # INFO used_memory after filling minus before
    # MEMORY USAGE of the keys, summed: the sessions' hashes and the sorted sets
    key_bytes: dict[str, int]
    offer_used_memory: int  # INFO used_memory after an offer for each session minus before
    offer_key_bytes: int  # MEMORY USAGE of the offers' frame keys, summed
    offer_hash_bytes: int  # what the offer fields added to the sessions' hashes
    # Another database's keys changed while measuring: the used_memory figures include that.
    others_changed: bool = False

    @property
    def bytes_per_session(self) -> float:
        return self.used_memory / self.sessions

    @property
    def key_bytes_per_session(self) -> float:
        return sum(self.key_bytes.values()) / self.sessions

    @property
    def sessions_per_gib(self) -> int:
        return int(GIB / self.bytes_per_session)

    @property
    def bytes_per_offer(self) -> float:
        return self.offer_used_memory / self.sessions


@dataclass
class RedisReport:
    seconds: float
    connections: int
    carts: int
    pause_seconds: float
    window: float
    services: dict[str, str]
    decisions_placement: str
    ingest_placement: dict[str, str] = field(default_factory=dict)
    load_average: dict[str, float] = field(default_factory=dict)
    ingest: list[IngestRun] = field(default_factory=list)
    decisions: list[DecisionRun] = field(default_factory=list)
    memory: RedisMemory | None = None
    embedded_memory: MemoryFigures | None = None

    def ingest_rate(self, mode: str, front_ends: int, frames: str) -> float:
        for measured in self.ingest:
            if (measured.mode, measured.front_ends, measured.frames) == (mode, front_ends, frames):
                return measured.events_per_second
        raise KeyError((mode, front_ends, frames))

    def table(self) -> str:
        services = ", ".join(f"{name} {about}" for name, about in self.services.items())
        load = ", ".join(f"{value:.2f} {when}" for when, value in self.load_average.items())
        rows = [f"redis mode ({services}; load average {load})"]
        rows += self._ingest_rows()
        rows.append("")
        rows += self._decision_rows()
        if self.memory is not None:
            rows.append("")
            rows += self._memory_rows(self.memory, self.embedded_memory)
        return "\n".join(rows)

    def _ingest_rows(self) -> list[str]:
        widths = (9, 11, 12, 10, 11, 11, 8, 8, 8, 15, 15)
        rows = [
            f"ingest (events/s acknowledged through /ws/collect/, {self.connections} connections "
            f"over all front ends, {self.seconds:g} s each; core use in % of one core)",
            _row(
                "mode",
                "front ends",
                "frames",
                "events/s",
                "x embedded",
                "front ends",
                "client",
                "redis",
                "others",
                "events/fe core",
                "redis µs/event",
                widths=widths,
            ),
        ]
        for measured in self.ingest:
            embedded = self.ingest_rate(EMBEDDED, 1, measured.frames)
            in_redis = measured.mode == REDIS
            rows.append(
                _row(
                    measured.mode,
                    str(measured.front_ends),
                    measured.frames,
                    f"{measured.events_per_second:,.0f}",
                    f"{measured.events_per_second / embedded:.2f}x",
                    f"{measured.front_ends_busy:.0%}",
                    f"{measured.client_busy:.0%}",
                    f"{measured.redis_busy:.0%}" if in_redis else "-",
                    f"{measured.others_busy:.0%}",
                    f"{measured.events_per_front_end_core:,.0f}",
                    f"{measured.redis_us_per_event:.1f}" if in_redis else "-",
                    widths=widths,
                )
            )
        placement = "; ".join(f"{key}: {value}" for key, value in self.ingest_placement.items())
        rows.append(
            "others: the rest of the machine's busy time (other work, the kernel's loopback "
            f"traffic); events/fe core: events/s per core of front-end CPU time; {placement}"
        )
        return rows

    def _decision_rows(self) -> list[str]:
        widths = (9, 8, 7, 7, 8, 7, 7, 7, 7, 8, 8, 8, 8, 10, 11, 13, 7)
        rows = [
            f"decisions (pause deadline to offer frame at the client, ms from the send; "
            f"{self.carts:,} carts paced over {self.window:g} s, pause {self.pause_seconds:g} s; "
            f"{self.decisions_placement})",
            _row(
                "mode",
                "workers",
                "carts",
                "offers",
                "on time",
                "p50",
                "p90",
                "p99",
                "max",
                "p50 ack",
                "p99 ack",
                "rtt p99",
                "due/s",
                "decided/s",
                "recorded/s",
                "all recorded",
                "others",
                widths=widths,
            ),
        ]
        for run in self.decisions:
            measured, late = run.round, run.round.from_send
            due, decided = run.due_per_second, run.recorded.decided_per_second
            rows.append(
                _row(
                    run.mode,
                    str(run.workers) if run.mode == REDIS else "-",
                    f"{measured.carts:,}",
                    f"{measured.offers:,}",
                    f"{measured.on_time:,}",
                    _ms(late.p50),
                    _ms(late.p90),
                    _ms(late.p99),
                    _ms(late.max),
                    _ms(measured.from_ack.p50),
                    _ms(measured.from_ack.p99),
                    _ms(measured.ack_rtt.p99),
                    "-" if due is None else f"{due:,.0f}",
                    "-" if decided is None else f"{decided:,.0f}",
                    f"{run.recorded.per_second:,.0f}",
                    f"{run.recorded.recorded_after:.2f} s",
                    f"{run.others_busy:.0%}",
                    widths=widths,
                )
            )
        rows.append(
            "on time: sockets with exactly one offer, within 1 s of the deadline; ack: latency "
            "from the ack (a lower bound); due/s: pauses falling due a second; decided/s: "
            "decisions from the first to the last; recorded/s: decisions over the time from the "
            "first until all were in PostgreSQL (offer, reasons, record); others: the rest of "
            "the machine's busy time during the round, in % of one core"
        )
        return rows

    @staticmethod
    def _memory_rows(memory: RedisMemory, embedded: MemoryFigures | None) -> list[str]:
        per_key = ", ".join(
            f"{name} {size / memory.sessions:,.0f}" for name, size in memory.key_bytes.items()
        )
        rows = [
            f"memory (Redis, {memory.sessions:,} live sessions of {memory.events_per_session} "
            f"events each)",
            f"used_memory: {memory.bytes_per_session:,.0f} bytes/session, "
            f"{memory.sessions_per_gib:,} sessions per GB"
            + (" (disturbed: other databases changed meanwhile)" if memory.others_changed else ""),
            f"MEMORY USAGE of the keys: {memory.key_bytes_per_session:,.0f} bytes/session "
            f"({per_key})",
            f"an offer adds {memory.bytes_per_offer:,.0f} bytes (used_memory; its frame key "
            f"{memory.offer_key_bytes / memory.sessions:,.0f} and the hash's offer fields "
            f"{memory.offer_hash_bytes / memory.sessions:,.0f} by MEMORY USAGE)",
        ]
        if embedded is not None:
            rows.append(
                f"embedded (MemoryStore, tracemalloc, the same visits): "
                f"{embedded.bytes_per_session:,.0f} bytes/session"
            )
        return rows

    def as_dict(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "seconds": self.seconds,
            "connections": self.connections,
            "carts": self.carts,
            "pause_seconds": self.pause_seconds,
            "window": self.window,
            "services": self.services,
            "placement": {"ingest": self.ingest_placement, "decisions": self.decisions_placement},
            "load_average": self.load_average,
            "machine": machine(),
            "ingest": [
                asdict(m)
                | {
                    "events_per_front_end_core": m.events_per_front_end_core,
                    "redis_us_per_event": m.redis_us_per_event,
                    "to_embedded": m.events_per_second / self.ingest_rate(EMBEDDED, 1, m.frames),
                }
                for m in self.ingest
            ],
            "decisions": [
                {
                    "mode": run.mode,
                    "workers": run.workers,
                    "round": asdict(run.round) | {"exactly_one_each": run.round.exactly_one_each},
                    "recorded": asdict(run.recorded)
                    | {
                        "per_second": run.recorded.per_second,
                        "decided_per_second": run.recorded.decided_per_second,
                    },
                    "others_busy": run.others_busy,
                    "due_per_second": run.due_per_second,
                    "every_cart_one_offer": run.every_cart_one_offer,
                }
                for run in self.decisions
            ],
        }
        if self.memory is not None:
            figures["memory"] = asdict(self.memory) | {
                "bytes_per_session": self.memory.bytes_per_session,
                "key_bytes_per_session": self.memory.key_bytes_per_session,
                "sessions_per_gib": self.memory.sessions_per_gib,
                "bytes_per_offer": self.memory.bytes_per_offer,
            }
        if self.embedded_memory is not None:
            figures["embedded_memory"] = asdict(self.embedded_memory)
        return figures


def _row(first: str, *cells: str, widths: Sequence[int]) -> str:
    return f"{first:<{widths[0]}}" + "".join(
        f"{cell:>{width}}" for cell, width in zip(cells, widths[1:], strict=True)
    )


def _ms(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 100 else f"{value:,.0f}"


# --- CPU time ----------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_seconds(client: aioredis.Redis) -> float:
    """CPU time the Redis server has used since it started, as it reports it."""
    cpu = await client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


class CpuWatch:
    """The machine's busy time over a span, less ours: what other work took meanwhile.

    Ours is the processes of `pids`, Redis (when `redis_url` is given), and the children this
    process has waited for (a client process run to its end within the span).
    """

    def __init__(self, pids: Sequence[int], redis_url: str | None) -> None:
        self.pids = pids
        self.redis_url = redis_url
        self.started = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = sum(load.cpu_seconds(pid) for pid in self.pids)
        ours += children.ru_utime + children.ru_stime
        if self.redis_url:
            ours += on_redis(self.redis_url, redis_cpu_seconds)
        return time.perf_counter(), machine_busy_seconds(), ours

    def others_busy(self) -> float:
        """In cores: 1.0 is one core's time, all the span long."""
        wall, busy, ours = self._sample()
        started_wall, started_busy, started_ours = self.started
        others = (busy - started_busy) - (ours - started_ours)
        return max(0.0, others) / (wall - started_wall)


# --- the load client (its own process) ---------------------------------------------------------


async def measure_load(
    tally: load.Tally,
    *,
    warmup: float,
    seconds: float,
    watch_pids: Sequence[int],
    redis: aioredis.Redis | None,
) -> dict[str, Any]:
    await asyncio.sleep(warmup)
    events, start, cpu = tally.events, time.perf_counter(), time.process_time()
    servers = [load.cpu_seconds(pid) for pid in watch_pids]
    redis_cpu = await redis_cpu_seconds(redis) if redis else 0.0
    busy = machine_busy_seconds()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    return {
        "machine_busy_seconds": machine_busy_seconds() - busy,
        "events": tally.events - events,
        "seconds": elapsed,
        "client_cpu_seconds": time.process_time() - cpu,
        "front_end_cpu_seconds": [
            load.cpu_seconds(pid) - before for pid, before in zip(watch_pids, servers, strict=True)
        ],
        "redis_cpu_seconds": (await redis_cpu_seconds(redis) - redis_cpu) if redis else 0.0,
    }


async def run_load(
    urls: Sequence[str],
    *,
    events_per_frame: int,
    connections: int,
    warmup: float,
    seconds: float,
    watch_pids: Sequence[int],
    redis_url: str | None,
) -> dict[str, Any]:
    """`load.run_load` over several front ends, the sockets dealt out in turn; with CPU times."""
    tally, stopping = load.Tally(), asyncio.Event()
    redis = aioredis.Redis.from_url(redis_url) if redis_url else None
    try:
        async with asyncio.timeout(warmup + seconds + 60):
            sessions = [
                asyncio.create_task(
                    load.session(
                        urls[number % len(urls)],
                        number,
                        events_per_frame,
                        WINDOW_FRAMES,
                        tally,
                        stopping,
                    )
                )
                for number in range(connections)
            ]
            timer = asyncio.create_task(
                measure_load(
                    tally, warmup=warmup, seconds=seconds, watch_pids=watch_pids, redis=redis
                )
            )
            try:
                done, _ = await asyncio.wait(
                    [timer, *sessions], return_when=asyncio.FIRST_COMPLETED
                )
                if timer not in done:
                    ended = done.pop()
                    raise ended.exception() or load.LoadError("a socket closed before the end")
                stopping.set()
                await asyncio.wait(sessions, timeout=10)
                return timer.result()
            finally:
                for task in (timer, *sessions):
                    task.cancel()
                await asyncio.gather(timer, *sessions, return_exceptions=True)
    finally:
        if redis is not None:
            await redis.aclose()


def load_main(args: argparse.Namespace) -> None:
    try:
        figures = asyncio.run(
            run_load(
                args.url,
                events_per_frame=args.batch,
                connections=args.connections,
                warmup=args.warmup,
                seconds=args.seconds,
                watch_pids=args.watch_pid,
                redis_url=args.redis_url,
            )
        )
    except (load.LoadError, WebSocketException, RedisError, OSError, TimeoutError) as exc:
        sys.exit(f"load: {type(exc).__name__}: {exc}")
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    which = parser.add_subparsers(dest="which", required=True)
    client = which.add_parser("load", help="the load client of the ingest part; prints JSON")
    client.add_argument("--url", action="append", required=True, help="a front end (repeat)")
    client.add_argument("--batch", type=int, default=1, help="events per frame (1: track)")
    client.add_argument("--connections", type=int, default=8)
    client.add_argument("--warmup", type=float, default=WARMUP_SECONDS)
    client.add_argument("--seconds", type=float, default=5.0)
    client.add_argument("--watch-pid", type=int, action="append", default=[])
    client.add_argument("--redis-url", help="also report this Redis server's CPU time")
    load_main(parser.parse_args(argv))


# --- the services: a throw-away Redis database and PostgreSQL database -------------------------


def on_redis(url: str, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """One call on a client of its own, from sync code."""

    async def run() -> T:
        client = aioredis.Redis.from_url(url)
        try:
            return await call(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except (RedisError, OSError) as exc:
        raise BenchError(f"bench redis needs Redis at {url}: {exc}") from exc


@contextlib.contextmanager
def throwaway_redis(url: str) -> Iterator[str]:
    """The Redis database at `url`, which must be empty; flushed when done."""
    if on_redis(url, lambda client: client.dbsize()):
        raise BenchError(
            f"the Redis database {url} is not empty: give another with --redis-url, or flush "
            "it if it is a leftover of an interrupted run"
        )
    try:
        yield url
    finally:
        flush_redis(url)


def flush_redis(url: str) -> None:
    on_redis(url, lambda client: client.flushdb())


def redis_about(url: str) -> str:
    async def info(client: aioredis.Redis) -> dict[str, Any]:
        return dict(await client.info("server")) | dict(await client.info("persistence"))

    about = on_redis(url, info)
    where = urllib.parse.urlsplit(url)
    persistence = "append-only file on" if about.get("aof_enabled") else "append-only file off"
    return (
        f"{about['redis_version']} at {where.hostname}:{where.port or 6379}{where.path} "
        f"({persistence})"
    )


@contextlib.contextmanager
def throwaway_postgres(server_url: str) -> Iterator[str]:
    """A new database on the PostgreSQL server of `server_url`, dropped when done; its URL."""
    name = f"liveoffers_bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"bench redis needs PostgreSQL at {server_url}: {exc}") from exc
    try:
        yield urllib.parse.urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        try:
            with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        except psycopg.Error as exc:
            raise BenchError(f"could not drop the database {name}: {exc}") from exc


CHANNEL_LAYER = (
    "from django.conf import settings; layer = settings.CHANNEL_LAYERS['default']; "
    "print(layer['BACKEND'].rpartition('.')[2], layer.get('CONFIG', {}).get('capacity', ''))"
)


def channel_layer_about(env: dict[str, str]) -> str:
    """The channel layer the front ends and workers run with: it carries every offer."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", CHANNEL_LAYER],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode:
        raise BenchError(f"could not read the channel layer's settings: {done.stderr[-2000:]}")
    backend, _, capacity = done.stdout.strip().splitlines()[-1].partition(" ")
    return f"{backend}, capacity {capacity}" if capacity else backend


def postgres_about(url: str) -> str:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    where = urllib.parse.urlsplit(url)
    return f"{row[0] if row else '?'} at {where.hostname}:{where.port or 5432}"


# --- processes ---------------------------------------------------------------------------------


def pin_plan(count: int) -> list[int | None]:
    """A core of its own for each process in turn while distinct cores last; the rest unpinned.

    With one core, as in `bench ingest`, nothing is pinned.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return [None] * count
    return [cores[i] if i < len(cores) else None for i in range(count)]


def describe_cores(what: str, cores: Sequence[int | None]) -> str:
    pinned = [core for core in cores if core is not None]
    if not pinned:
        return f"{what} not pinned"
    where = "core" if len(pinned) == 1 else "cores"
    place = f"{what} on {where} {', '.join(str(core) for core in pinned)}"
    return place if len(pinned) == len(cores) else f"{place}, the others not pinned"


@contextlib.contextmanager
def running_servers(
    argv: tuple[str, ...],
    cores: Sequence[int | None],
    *,
    env: dict[str, str],
    workdir: Path,
    name: str,
) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    """One server process a core in `cores`, each listening on a free port; all stopped after."""
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                running_server(
                    Server(f"{name}-{number}", name, argv),
                    env=env,
                    core=core,
                    log=workdir / f"{name}-{number}.log",
                )
            )
            for number, core in enumerate(cores, 1)
        ]
        yield started


@contextlib.contextmanager
def running_worker(
    number: int, *, env: dict[str, str], workdir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py runstream`, not pinned, once it says it started; always stopped after."""
    log = workdir / f"runstream-{number}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runstream"],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"worker started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise BenchError(f"runstream did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.05)
        yield process
    finally:
        stop(process)


# --- ingest ------------------------------------------------------------------------------------


def run_load_process(
    ports: Sequence[int],
    pids: Sequence[int],
    *,
    events_per_frame: int,
    options: Mapping[str, Any],
    redis_url: str | None,
    core: int | None,
) -> dict[str, Any]:
    seconds = float(options["seconds"])
    command = [
        sys.executable,
        "-m",
        "benchmarks.redis",
        "load",
        *(f"--url=ws://{HOST}:{port}{PATH}" for port in ports),
        f"--batch={events_per_frame}",
        f"--connections={options['connections']}",
        f"--warmup={WARMUP_SECONDS}",
        f"--seconds={seconds}",
        *(f"--watch-pid={pid}" for pid in pids),
        *([f"--redis-url={redis_url}"] if redis_url else []),
    ]
    return run_pinned_client(
        command, core=core, timeout=WARMUP_SECONDS + seconds + 90, what="load client"
    )


def measure_ingest(
    report: RedisReport,
    mode: str,
    front_ends: int,
    *,
    env: dict[str, str],
    redis_url: str,
    workdir: Path,
    options: Mapping[str, Any],
    progress: Progress,
) -> None:
    *server_cores, client_core = pin_plan(front_ends + 1)
    label = "embedded serve" if mode == EMBEDDED else f"{front_ends} x serve --no-worker"
    placement = report.ingest_placement[label] = (
        f"{describe_cores('server' if mode == EMBEDDED else 'front ends', server_cores)}, "
        f"{describe_cores('client', [client_core])}"
    )
    progress(f"ingest, {label}: starting ({placement})")
    argv = EMBEDDED_SERVE if mode == EMBEDDED else FRONT_END_SERVE
    with running_servers(argv, server_cores, env=env, workdir=workdir, name=mode) as servers:
        for frames, events_per_frame in FRAMES.items():
            figures = run_load_process(
                [port for _, port in servers],
                [process.pid for process, _ in servers],
                events_per_frame=events_per_frame,
                options=options,
                redis_url=redis_url if mode == REDIS else None,
                core=client_core,
            )
            elapsed = figures["seconds"]
            ours = (
                sum(figures["front_end_cpu_seconds"])
                + figures["client_cpu_seconds"]
                + figures["redis_cpu_seconds"]
            )
            measured = IngestRun(
                mode=mode,
                front_ends=front_ends,
                frames=frames,
                events_per_second=figures["events"] / elapsed,
                front_ends_busy=sum(figures["front_end_cpu_seconds"]) / elapsed,
                client_busy=figures["client_cpu_seconds"] / elapsed,
                redis_busy=figures["redis_cpu_seconds"] / elapsed,
                others_busy=max(0.0, figures["machine_busy_seconds"] - ours) / elapsed,
            )
            report.ingest.append(measured)
            progress(
                f"ingest, {label}, {frames}: {measured.events_per_second:,.0f} events/s "
                f"(front ends {measured.front_ends_busy:.0%}, client {measured.client_busy:.0%}, "
                f"redis {measured.redis_busy:.0%}, others {measured.others_busy:.0%} of a core)"
            )


# --- decisions ---------------------------------------------------------------------------------


def last_decision_id(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM offers_decision").fetchone()
    return int(row[0]) if row else 0


def watch_records(database_url: str, after: int, expected: int, stopping: threading.Event) -> float:
    """The wall-clock time at which the database first held `expected` decisions after `after`."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not stopping.is_set():
            row = conn.execute(
                "SELECT count(*) FROM offers_decision WHERE id > %s", (after,)
            ).fetchone()
            if row and row[0] >= expected:
                return time.time()
            stopping.wait(RECORD_POLL_SECONDS)
    raise BenchError("stopped before every decision was recorded")


def recorded_since(database_url: str, after: int, all_in_at: float) -> Recorded:
    with psycopg.connect(database_url, autocommit=True) as conn:
        decisions = conn.execute(
            "SELECT count(*), count(DISTINCT pause_key), "
            "count(*) FILTER (WHERE outcome = 'offer'), min(at), max(at) "
            "FROM offers_decision WHERE id > %s",
            (after,),
        ).fetchone()
        offers = conn.execute(
            "SELECT count(*) FROM offers_offer WHERE decision_id > %s", (after,)
        ).fetchone()
    if decisions is None or offers is None or decisions[3] is None:
        raise BenchError("the round recorded no decision")
    count, pause_keys, offered, first, last = decisions
    return Recorded(
        decisions=count,
        pause_keys=pause_keys,
        offers=offered,
        offer_rows=offers[0],
        decided_over=(last - first).total_seconds(),
        recorded_after=all_in_at - first.timestamp(),
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


def measure_decisions(
    report: RedisReport,
    mode: str,
    workers: int,
    *,
    env: dict[str, str],
    database_url: str,
    redis_url: str,
    workdir: Path,
    progress: Progress,
) -> None:
    server_core, client_core = pin_plan(2)
    label = "embedded" if mode == EMBEDDED else f"{workers} worker{'s' * (workers > 1)}"
    argv = EMBEDDED_SERVE if mode == EMBEDDED else FRONT_END_SERVE
    progress(f"decisions, {label}: starting")
    with contextlib.ExitStack() as stack:
        ((server, port),) = stack.enter_context(
            running_servers(argv, [server_core], env=env, workdir=workdir, name=f"{mode}-decide")
        )
        pids = [server.pid] + [
            stack.enter_context(running_worker(number, env=env, workdir=workdir)).pid
            for number in range(1, workers + 1)
        ]

        def client(carts: int, window: float) -> Callable[[], Round]:
            def run() -> Round:
                figures = run_client_process(
                    port=port,
                    carts=carts,
                    window=window,
                    pause_seconds=report.pause_seconds,
                    core=client_core,
                )
                return measured_round(mode, figures)

            return run

        # The warm-up proves the setup (the model loaded, every pause ends in one offer) and
        # its decisions are all recorded before the measured round starts.
        warmup, recorded = decided_round(
            database_url=database_url,
            run_client=client(WARMUP_CARTS, 0.0),
            expected=WARMUP_CARTS,
        )
        if not DecisionRun(mode, workers, warmup, recorded).every_cart_one_offer:
            raise BenchError(
                f"decisions, {label}: {warmup.offers} offers and {recorded.offers} recorded for "
                f"{WARMUP_CARTS} warm-up carts ({warmup.on_time} on time); logs in {workdir}"
            )
        cpu = CpuWatch(pids, redis_url if mode == REDIS else None)
        measured, recorded = decided_round(
            database_url=database_url,
            run_client=client(report.carts, report.window),
            expected=report.carts,
        )
        run = DecisionRun(mode, workers, measured, recorded, others_busy=cpu.others_busy())
    report.decisions.append(run)
    progress(
        f"decisions, {label}: {measured.offers:,} offers, {measured.on_time:,} of "
        f"{measured.carts:,} carts on time, p50 {_ms(measured.from_send.p50)} ms, p99 "
        f"{_ms(measured.from_send.p99)} ms; all {recorded.decisions:,} recorded "
        f"{recorded.recorded_after:.2f} s after the first (others {run.others_busy:.0%} of a core)"
    )


# --- memory ------------------------------------------------------------------------------------


async def used_memory(client: aioredis.Redis) -> int:
    """INFO used_memory less the clients' buffers and the cached scripts: the data's share."""
    memory = await client.info("memory")
    return (
        int(memory["used_memory"])
        - int(memory["mem_clients_normal"])
        - int(memory.get("used_memory_scripts", 0))
    )


async def other_keys(client: aioredis.Redis) -> dict[str, int]:
    """Keys in the server's other databases: when they change, so does used_memory."""
    ours = f"db{client.connection_pool.connection_kwargs.get('db', 0)}"
    keyspace = await client.info("keyspace")
    return {db: int(about["keys"]) for db, about in keyspace.items() if db != ours}


async def memory_usage(client: aioredis.Redis, keys: Sequence[str | bytes]) -> int:
    """MEMORY USAGE of every key, summed; exact (SAMPLES 0) for the nested ones."""
    total = 0
    for start in range(0, len(keys), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 1000]:
                pipe.memory_usage(key, samples=0)
            total += sum(int(size or 0) for size in await pipe.execute())
    return total


async def fill_sessions(store: RedisStore, sessions: int) -> tuple[list[str], int]:
    """Apply a realistic visit to each of `sessions` new sessions, frame by frame, as a front
    end would; returns the session ids and the events applied."""
    runs: list[list[list[Event]]] = []
    for number in range(64):
        run = []
        for frame in shopper_frames(number):
            items = decode_frame(frame)
            events = [item for item in items if isinstance(item, Event)]
            if len(events) != len(items):
                raise BenchError(f"the benchmark's own frame is refused: {items}")
            run.append(events)
        runs.append(run)
    ids = [new_session_id() for _ in range(sessions)]
    start = time.time()

    async def visit(number: int) -> int:
        session_id, applied = ids[number], 0
        await store.open(session_id=session_id, site="demo", now=start)
        for step, events in enumerate(runs[number % len(runs)]):
            result = await store.apply(
                session_id=session_id, site="demo", events=events, now=start + step * 0.001
            )
            if result.errors:
                raise BenchError(f"the benchmark's own events are refused: {result.errors}")
            applied += len(result.acked)
        return applied

    applied = 0
    for first in range(0, sessions, FILL_AT_ONCE):
        done = await asyncio.gather(*map(visit, range(first, min(sessions, first + FILL_AT_ONCE))))
        applied += sum(done)
    return ids, applied


async def give_offers(store: RedisStore, ids: Sequence[str]) -> None:
    """An offer for each session, its frame as a worker makes it.

    One at a time, as a worker notes them: concurrent calls would each take a connection of
    redis-py's pool, and every connection holds memory of its own in Redis.
    """
    # The demo's rule with the longer text; imported here, as it needs Django's apps loaded.
    from offers.management.commands.bootstrap_demo import DEMO_RULES

    *_, discount, title, message = max(DEMO_RULES, key=lambda rule: len(rule[-1]))
    now = time.time()
    for session_id in ids:
        offer = OfferMade(
            offer_id=new_offer_id(),
            code=new_offer_code(discount),
            rule_id=1,
            title=title,
            message=message,
            discount_percent=discount,
            created_at=now,
            expires_at=now + 1800,
        )
        await store.note_offer(
            session_id,
            at=now,
            offer_id=offer.offer_id,
            frame=offer_frame(offer, risk=0.8765, model="cart-risk@1"),
            expires_at=offer.expires_at,
        )


async def measure_redis_memory(url: str, sessions: int) -> RedisMemory:
    client = aioredis.Redis.from_url(url)
    store = RedisStore(client)  # the default 30-minute idle time and 30 s pause
    try:
        await client.flushdb()
        others = await other_keys(client)
        before = await used_memory(client)
        ids, applied = await fill_sessions(store, sessions)
        after = await used_memory(client)
        hashes = [store.session_key(session_id) for session_id in ids]
        # The sorted sets every session has an entry in (streaming/redis_store.py's layout).
        shared = {name: f"{store.prefix}{name}" for name in ("pauses", "live", "carts")}
        held = await client.dbsize()
        counts = [await client.zcard(key) for key in shared.values()]
        if held != sessions + len(shared) or counts != [sessions] * len(shared):
            raise BenchError(
                f"Redis holds {held} keys and {counts} timers, live and carts for {sessions} sessions"
            )
        key_bytes = {"session hash": await memory_usage(client, hashes)} | {
            name: await memory_usage(client, [key]) for name, key in shared.items()
        }
        await give_offers(store, ids)
        with_offers = await used_memory(client)
        disturbed = await other_keys(client) != others
        offer_keys = [store.offer_key(session_id) for session_id in ids]
        return RedisMemory(
            sessions=sessions,
            events_per_session=round(applied / sessions),
            used_memory=after - before,
            key_bytes=key_bytes,
            offer_used_memory=with_offers - after,
            offer_key_bytes=await memory_usage(client, offer_keys),
            offer_hash_bytes=await memory_usage(client, hashes) - key_bytes["session hash"],
            others_changed=disturbed,
        )
    finally:
        await client.flushdb()
        await client.aclose()


# --- the benchmark (manage.py bench redis) -----------------------------------------------------


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM raises BenchError wherever the run is, so that it still stops every process it
    started and drops its databases; a second SIGTERM acts as it would have."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    previous = signal.getsignal(signal.SIGTERM)
    restore = signal.SIG_DFL if previous is None else previous

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, restore)
        raise BenchError("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, restore)


def run(options: Mapping[str, Any], progress: Progress) -> RedisReport:
    redis_url = options["redis_url"]
    server_core, client_core = pin_plan(2)
    report = RedisReport(
        seconds=float(options["seconds"]),
        connections=int(options["connections"]),
        carts=int(options["carts"]),
        pause_seconds=float(options["pause_seconds"]),
        window=float(options["window"]),
        services={},
        decisions_placement=(
            f"{describe_cores('server', [server_core])}, "
            f"{describe_cores('client', [client_core])}, workers not pinned"
        ),
    )
    report.load_average["at the start"] = os.getloadavg()[0]
    progress(f"load average {report.load_average['at the start']:.2f}")
    with contextlib.ExitStack() as stack:
        stack.enter_context(stopped_by_sigterm())
        stack.enter_context(throwaway_redis(redis_url))
        database_url = stack.enter_context(throwaway_postgres(options["postgres_url"]))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liveoffers-bench-")))
        report.services = {
            "Redis": redis_about(redis_url),
            "PostgreSQL": postgres_about(database_url),
        }
        # Embedded mode is the baseline: whatever REDIS_URL the caller's environment has.
        embedded_env = {
            name: value
            for name, value in decisions_env(workdir, report.pause_seconds).items()
            if name != "REDIS_URL"
        } | {"DATABASE_URL": database_url}
        redis_env = embedded_env | {"REDIS_URL": redis_url}
        report.services["channel layer"] = channel_layer_about(redis_env)
        progress(", ".join(f"{name} {about}" for name, about in report.services.items()))
        ingest = {"PAUSE_SECONDS": f"{INGEST_PAUSE_SECONDS:g}"}
        name = urllib.parse.urlsplit(database_url).path.lstrip("/")
        progress(f"preparing the database {name} (migrate, bootstrap_demo trains the model)")
        prepare_database(embedded_env)
        open_offer_rules(embedded_env)

        for mode, front_ends in [(EMBEDDED, 1), *((REDIS, n) for n in options["front_ends"])]:
            flush_redis(redis_url)
            measure_ingest(
                report,
                mode,
                front_ends,
                env=(redis_env if mode == REDIS else embedded_env) | ingest,
                redis_url=redis_url,
                workdir=workdir,
                options=options,
                progress=progress,
            )
        report.load_average["after ingest"] = os.getloadavg()[0]

        for mode, workers in [(EMBEDDED, 0), *((REDIS, n) for n in options["workers"])]:
            flush_redis(redis_url)
            measure_decisions(
                report,
                mode,
                workers,
                env=redis_env if mode == REDIS else embedded_env,
                database_url=database_url,
                redis_url=redis_url,
                workdir=workdir,
                progress=progress,
            )
        report.load_average["after decisions"] = os.getloadavg()[0]

        sessions = int(options["sessions"])
        progress(f"memory: {sessions:,} sessions in Redis, then an offer each")
        report.memory = asyncio.run(measure_redis_memory(redis_url, sessions))
        progress(f"memory: {sessions:,} sessions in a MemoryStore, for comparison")
        report.embedded_memory = measure_memory(sessions)
    report.load_average["at the end"] = os.getloadavg()[0]
    return report


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=REDIS_URL,
        help=f"a Redis database of its own, empty; flushed when done ({REDIS_URL})",
    )
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help=f"a PostgreSQL server where it may create and drop a database ({POSTGRES_URL})",
    )
    parser.add_argument(
        "--seconds",
        type=bounded_float(0.1, 600),
        default=5.0,
        help="measured seconds per load run (5)",
    )
    parser.add_argument(
        "--connections",
        type=bounded_int(1, 1_000),
        default=8,
        help="load client sockets in all (8)",
    )
    parser.add_argument(
        "--front-ends",
        type=bounded_ints(1, 8),
        default=[1, 2],
        help="serve --no-worker processes taking the load, comma-separated (1,2)",
    )
    parser.add_argument(
        "--carts", type=bounded_int(1, 10_000), default=2000, help="carts pausing together (2,000)"
    )
    parser.add_argument(
        "--workers",
        type=bounded_ints(1, 8),
        default=[1, 2],
        help="runstream workers deciding them, comma-separated (1,2)",
    )
    parser.add_argument(
        "--pause-seconds", type=bounded_float(0.5, 10), default=1.0, help="PAUSE_SECONDS (1)"
    )
    parser.add_argument(
        "--window",
        type=bounded_float(0, 10),
        default=0.5,
        help="seconds over which the carts' last activity is spread (0.5)",
    )
    parser.add_argument(
        "--sessions",
        type=bounded_int(1, 1_000_000),
        default=20_000,
        help="sessions held in Redis for the memory figure (20,000)",
    )


BENCHMARK = Benchmark(
    help="Redis mode: events/s with 1 and 2 front ends, decisions with 1 and 2 workers, Redis "
    "memory per session, beside embedded mode (needs Redis and PostgreSQL)",
    add_arguments=add_arguments,
    run=run,
)


if __name__ == "__main__":
    main()
