"""`bench redis`: Redis mode on this machine's Redis and PostgreSQL, beside embedded mode.

Five parts, in one run, one module each:

- ingest: events/s acknowledged through `/ws/collect/` by 1 and by 2 `serve --no-worker` front
  ends, and by embedded `serve` (the baseline), with the load client of `bench ingest`
  (benchmarks.clients.load) driving every front end from one process (`ingest.py`);
- decisions: from a pause's deadline to the `offer` frame at the client, with the client of
  `bench decisions` and every pause made to end in an offer, behind one `serve --no-worker`
  with 1 and with 2 `runstream` workers, and behind embedded `serve`; and, from PostgreSQL, the
  decisions made a second and how soon every one was recorded (`decisions.py`);
- frames: Redis's CPU time per single-event frame through the apply script, for the session
  layout of `streaming/redis_store.py` and the one it replaced, one frame a request and
  pipelined (`frames.py`);
- capacity: the single-event frames a second one Redis core carries, when front ends offer them
  at a steady rate and pipeline what comes while a request is in flight (`capacity.py`);
- memory: Redis memory per live session (`INFO` used_memory before and after, and `MEMORY
  USAGE` of the keys) with N realistic sessions held by a `RedisStore`, beside a `MemoryStore`
  (`memory.py`).

It works in a throw-away Redis logical database (refused unless empty, flushed between parts
and at the end) and a throw-away PostgreSQL database it creates, prepares with `migrate` and
`bootstrap_demo`, and drops. Every process it starts is stopped, whatever happens. The figures
and the table are in `figures.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import urllib.parse
from argparse import ArgumentParser
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis

from benchmarks import BenchError, Benchmark, Progress, bounded_float, bounded_int, bounded_ints
from benchmarks.decisions import add_round_arguments, decisions_env, open_offer_rules
from benchmarks.harness import (
    LOAD_CONNECTIONS,
    describe_cores,
    flush_redis,
    manage,
    on_redis,
    pin_plan,
    prepare_database,
    stopped_by_sigterm,
    throwaway_postgres,
    throwaway_redis,
)
from benchmarks.memory import measure_memory
from benchmarks.redis.capacity import measure_capacity
from benchmarks.redis.decisions import measure_decisions
from benchmarks.redis.figures import EMBEDDED, REDIS, RedisReport
from benchmarks.redis.frames import measure_frame_costs
from benchmarks.redis.ingest import measure_ingest
from benchmarks.redis.memory import measure_redis_memory

# Not the tests' databases (14 and 15): a run and the test suite may share the machine's Redis.
REDIS_URL = "redis://127.0.0.1:6379/13"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# Ingest leaves pauses out of the way: no worker decides during the measurement.
INGEST_PAUSE_SECONDS = 30.0


# --- the services it runs on ------------------------------------------------------------------


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


CHANNEL_LAYER = (
    "from django.conf import settings; layer = settings.CHANNEL_LAYERS['default']; "
    "print(layer['BACKEND'].rpartition('.')[2], layer.get('CONFIG', {}).get('capacity', ''))"
)


def channel_layer_about(env: dict[str, str]) -> str:
    """The channel layer the front ends and workers run with: it carries every offer."""
    done = manage(env, "shell", "-v", "0", "-c", CHANNEL_LAYER, timeout=120)
    if done.returncode:
        raise BenchError(f"could not read the channel layer's settings: {done.stderr[-2000:]}")
    backend, _, capacity = done.stdout.strip().splitlines()[-1].partition(" ")
    return f"{backend}, capacity {capacity}" if capacity else backend


def postgres_about(url: str) -> str:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    where = urllib.parse.urlsplit(url)
    return f"{row[0] if row else '?'} at {where.hostname}:{where.port or 5432}"


# --- the benchmark (manage.py bench redis) -----------------------------------------------------


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

        flush_redis(redis_url)
        progress(f"frames: {options['frames']:,} single-event frames for each layout and depth")
        report.frames = measure_frame_costs(redis_url, int(options["frames"]), progress)
        flush_redis(redis_url)
        offered = ", ".join(f"{rate:,}" for rate in options["offered"])
        progress(f"capacity: {offered} single-event frames/s offered, for each layout")
        report.capacity = measure_capacity(
            redis_url,
            options["offered"],
            float(options["load_seconds"]),
            progress,
            client_core=client_core,
        )
        report.capacity_placement = f"{describe_cores('client', [client_core])}, Redis not pinned"

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
        "--connections", type=LOAD_CONNECTIONS, default=8, help="load client sockets in all (8)"
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
    add_round_arguments(
        parser,
        pause_help="PAUSE_SECONDS (1)",
        window_help="seconds over which the carts' last activity is spread (0.5)",
    )
    parser.add_argument(
        "--frames",
        type=bounded_int(100, 1_000_000),
        default=20_000,
        help="single-event frames for the frame cost of each session layout (20,000)",
    )
    parser.add_argument(
        "--offered",
        type=bounded_ints(100, 200_000),
        default=[10_000, 20_000, 25_000, 30_000],
        help="single-event frames a second offered to Redis for its capacity, comma-separated "
        "(10000,20000,25000,30000)",
    )
    parser.add_argument(
        "--load-seconds",
        type=bounded_float(0.1, 60),
        default=3.0,
        help="seconds of frames at each offered rate (3)",
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
