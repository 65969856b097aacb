"""What every benchmark shares: servers started as processes, CPU pinning and CPU times,
throw-away SQLite, PostgreSQL and Redis databases, the load client's command line, and the
helpers that print the tables.

Linux only, like the benchmarks: pinning and CPU times come from the kernel (/proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psycopg
import redis.asyncio as aioredis
from psycopg import sql
from redis.exceptions import RedisError

from benchmarks import BenchError, bounded_int

BASE_DIR = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The collector socket every benchmark loads, on the demo site that bootstrap_demo creates.
PATH = "/ws/collect/?site=demo"
START_TIMEOUT = 60.0
# The load client: measured after this warm-up, with this many frames in flight per socket.
WARMUP_SECONDS = 1.0
WINDOW_FRAMES = 64

T = TypeVar("T")


# --- the machine: cores, CPU time -------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def redis_reads(client: aioredis.Redis) -> int:
    """Reads from its clients' sockets the Redis server has made since it started: a pipeline
    read at once is one."""
    return int((await client.info("stats"))["total_reads_processed"])


def pin_plan(count: int) -> list[int | None]:
    """A core of its own for each process in turn while distinct cores last; the rest unpinned.

    With one core, nothing is pinned.
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


@dataclass(frozen=True, slots=True)
class Cores:
    """A core for the server under test and one for its client, or neither on a one-core machine."""

    server: int | None
    client: int | None

    @classmethod
    def pick(cls) -> Cores:
        # One core each, so neither side steals the other's; with one core there is no choice.
        server, client = pin_plan(2)
        return cls(server, client)

    @property
    def pinned(self) -> bool:
        return self.server is not None

    def describe(self) -> str:
        if not self.pinned:
            return "one core only: server and client not pinned"
        return f"server on core {self.server}, client on core {self.client}"


def pinned(core: int | None) -> Callable[[], None] | None:
    """A `preexec_fn` pinning the new process to `core` (None: no pinning)."""
    # Pinned before exec, so every thread the process starts later inherits the core.
    return None if core is None else functools.partial(os.sched_setaffinity, 0, {core})


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    key: str
    label: str
    argv: tuple[str, ...]  # after the interpreter; --host and --port follow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def bench_env(workdir: Path) -> dict[str, str]:
    """The project's settings for a benchmark: a throw-away SQLite database in `workdir`."""
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        # The benchmark measures work per event, not the limiter saying no.
        "RATE_EVENTS_PER_SECOND": "1e9",
        "RATE_BURST": "1000000000",
        # and thousands of sockets come from one address: the load client's
        "CLIENT_RATE_EVENTS_PER_SECOND": "1e9",
        "CLIENT_RATE_BURST": "1000000000",
        "MAX_SOCKETS_PER_CLIENT": "1000000",
        "MAX_SOCKETS": "1000000",
        # every eligible cart decided by the rules, none explored at random
        "EXPLORE_PERCENT": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def manage(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`manage.py ARGS` under `env`, its output captured; the caller reads the return code."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# The database every benchmark's server starts from: migrated, with the demo shop and its model.
BOOTSTRAP_DEMO = ("bootstrap_demo",)


def prepare_database(env: dict[str, str], then: Sequence[str] = BOOTSTRAP_DEMO) -> None:
    """`migrate` the database of `env`, then run the manage.py command `then`."""
    for command in (("migrate", "--noinput", "-v", "0"), tuple(then)):
        done = manage(env, *command, timeout=300)
        if done.returncode:
            raise BenchError(f"manage.py {command[0]} failed:\n{done.stderr[-2000:]}")


def server_command(server: Server, port: int) -> list[str]:
    return [sys.executable, *server.argv, "--host", HOST, "--port", str(port)]


def start_logged(
    command: Sequence[str], *, env: dict[str, str], core: int | None, log: Path
) -> subprocess.Popen[bytes]:
    """A process in the project's folder, its output in `log`, pinned to `core`."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(core),
        )


@contextlib.contextmanager
def running_server(
    server: Server, *, env: dict[str, str], core: int | None, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start a server process on a free port and wait until it listens; always stop it."""
    port = free_port()
    process = start_logged(server_command(server, port), env=env, core=core, log=log)
    try:
        wait_listening(process, port, log)
        yield process, port
    finally:
        stop(process)


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
    process = start_logged([sys.executable, "manage.py", "runstream"], env=env, core=None, log=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"worker started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"runstream did not start (exit {process.poll()}):\n{_tail(log)}")
            time.sleep(0.05)
        yield process
    finally:
        stop(process)


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the server exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise BenchError(f"the server did not listen within {START_TIMEOUT:g} s:\n{_tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def run_pinned_client(
    command: list[str], *, core: int | None, timeout: float, what: str
) -> dict[str, Any]:
    """Run a client process pinned to `core` and return the JSON figures it prints."""
    try:
        done = subprocess.run(
            command,
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=pinned(core),
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise BenchError(f"the {what} did not finish in time") from exc
    if done.returncode:
        raise BenchError(f"the {what} failed: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


# `--connections` of `bench ingest` and `bench redis`: the load client's sockets in all.
LOAD_CONNECTIONS = bounded_int(1, 1_000)


def run_load_client(
    ports: Sequence[int],
    *,
    events_per_frame: int,
    connections: int,
    seconds: float,
    watch_pids: Sequence[int],
    redis_url: str | None = None,
    core: int | None,
) -> dict[str, Any]:
    """Run the load client (benchmarks.clients.load) against the servers on `ports`, the
    sockets dealt out in turn; its figures (`LoadFigures`) as a dict."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.clients.load",
        *(f"--url=ws://{HOST}:{port}{PATH}" for port in ports),
        f"--batch={events_per_frame}",
        f"--connections={connections}",
        f"--window={WINDOW_FRAMES}",
        f"--warmup={WARMUP_SECONDS}",
        f"--seconds={seconds}",
        *(f"--watch-pid={pid}" for pid in watch_pids),
        *([f"--redis-url={redis_url}"] if redis_url else []),
    ]
    return run_pinned_client(
        command, core=core, timeout=WARMUP_SECONDS + seconds + 90, what="load client"
    )


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM raises BenchError wherever the run is, so that it still stops every process it
    started and drops its databases; a second SIGTERM acts as it would have."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    previous = signal.getsignal(signal.SIGTERM)
    restore = signal.SIG_DFL if previous is None else previous

    def stop(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, restore)
        raise BenchError("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, restore)


# --- throw-away databases: Redis and PostgreSQL ------------------------------------------------


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
        raise BenchError(f"the benchmark needs Redis at {url}: {exc}") from exc


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


@contextlib.contextmanager
def throwaway_postgres(server_url: str) -> Iterator[str]:
    """A new database on the PostgreSQL server of `server_url`, dropped when done; its URL."""
    name = f"liveoffers_bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"the benchmark needs PostgreSQL at {server_url}: {exc}") from exc
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


# --- tables ------------------------------------------------------------------------------------


def row(first: str, *cells: str, widths: Sequence[int]) -> str:
    """A table row: `first` left-aligned in `widths[0]`, then each cell right-aligned in the
    next width; the last width serves every further cell."""
    *named, last = widths[1:]
    return f"{first:<{widths[0]}}" + "".join(
        f"{cell:>{named[n] if n < len(named) else last}}" for n, cell in enumerate(cells)
    )


def figure(value: float | None, *, decimals: int = 1) -> str:
    """A time for a table: with `decimals` under 100, whole above; "-" for none."""
    if value is None:
        return "-"
    return f"{value:,.{decimals}f}" if abs(value) < 100 else f"{value:,.0f}"
