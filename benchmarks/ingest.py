"""`bench ingest`: events/s acknowledged by the collector socket against two baselines, in one run.

- bare: a `websockets` server that only parses each frame and acks it (benchmarks.bare);
- floor: a Channels consumer under daphne doing the same, the framework's least (benchmarks.floor);
- collector: `manage.py serve`, the real thing: parse, validate, rate limit, apply, ack; then the
  same under `serve --server uvicorn`.

Each server runs in its own process pinned to one core, and the load client (benchmarks.clients.load)
in another process pinned to a second core, so each side has one core (Linux: pinning and CPU
times come from the kernel). Also reported: memory per live session (benchmarks.memory).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from argparse import ArgumentParser
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import BenchError, Benchmark, Progress, bounded_float, bounded_int
from benchmarks.memory import MemoryFigures, measure_memory

BASE_DIR = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PATH = "/ws/collect/?site=demo"
WARMUP_SECONDS = 1.0
WINDOW_FRAMES = 64
START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Server:
    key: str
    label: str
    argv: tuple[str, ...]  # after the interpreter; --host and --port follow


BASELINES = (
    Server("bare", "bare websockets", ("-m", "benchmarks.bare")),
    Server("floor", "channels floor", ("-m", "benchmarks.floor")),
)
# The collector as `serve` runs it by default (daphne), then on its other ASGI server.
COLLECTORS = (
    Server("collector", "collector", ("manage.py", "serve")),
    Server("collector-uvicorn", "collector uvicorn", ("manage.py", "serve", "--server", "uvicorn")),
)
SERVERS = BASELINES + COLLECTORS
FRAMES: dict[str, int] = {"single": 1, "batch of 20": 20}


@dataclass(frozen=True, slots=True)
class Cores:
    server: int | None
    client: int | None

    @classmethod
    def pick(cls) -> Cores:
        # One core each, so neither side steals the other's; with one core there is no choice.
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None)
        return cls(cores[0], cores[1])

    @property
    def pinned(self) -> bool:
        return self.server is not None

    def describe(self) -> str:
        if not self.pinned:
            return "one core only: server and client not pinned"
        return f"server on core {self.server}, client on core {self.client}"


@dataclass(frozen=True, slots=True)
class Measurement:
    server: str
    frames: str
    events_per_second: float
    server_core_busy: float | None
    client_core_busy: float


@dataclass
class IngestReport:
    connections: int
    seconds: float
    cores: Cores
    measurements: list[Measurement] = field(default_factory=list)
    memory: MemoryFigures | None = None

    def find(self, server: str, frames: str) -> Measurement:
        for measurement in self.measurements:
            if (measurement.server, measurement.frames) == (server, frames):
                return measurement
        raise KeyError((server, frames))

    def rate(self, server: str, frames: str) -> float:
        return self.find(server, frames).events_per_second

    def ratios(self, collector: Server, frames: str) -> dict[str, float]:
        rate = self.rate(collector.key, frames)
        to_floor, to_bare = _ratio_names(collector)
        return {
            to_floor: rate / self.rate("floor", frames),
            to_bare: rate / self.rate("bare", frames),
        }

    def table(self) -> str:
        default, *others = COLLECTORS
        rows = [
            f"ingest (events/s acknowledged, {self.connections} connections, "
            f"{self.seconds:g} s each, {self.cores.describe()})",
            _row("frames", *(s.label for s in (*BASELINES, default)), *_ratio_names(default)),
        ]
        rows += self._collector_rows(default, with_baselines=True)
        for collector in others:
            rows.append(f"{collector.label} (manage.py {' '.join(collector.argv[1:])}):")
            rows += self._collector_rows(collector, with_baselines=False)
        # Shows which side was the bottleneck: a server below 100% was waiting for its client.
        rows.append("core use (% of one core: server / client)")
        rows.append(_row("frames", *(s.label for s in SERVERS)))
        for frames in FRAMES:
            rows.append(_row(frames, *(self._busy(s.key, frames) for s in SERVERS)))
        if self.memory is not None:
            rows.append(
                f"memory: {self.memory.sessions:,} sessions, "
                f"{self.memory.bytes_per_session:,.0f} bytes/session, "
                f"{self.memory.sessions_per_gib:,} sessions per GB"
            )
        return "\n".join(rows)

    def _collector_rows(self, collector: Server, *, with_baselines: bool) -> list[str]:
        rows = []
        for frames in FRAMES:
            baselines = (
                [f"{self.rate(s.key, frames):,.0f}" for s in BASELINES]
                if with_baselines
                else ["" for _ in BASELINES]
            )
            rate = f"{self.rate(collector.key, frames):,.0f}"
            ratios = [f"{ratio:.2f}x" for ratio in self.ratios(collector, frames).values()]
            rows.append(_row(frames, *baselines, rate, *ratios))
        return rows

    def _busy(self, server: str, frames: str) -> str:
        measurement = self.find(server, frames)
        busy = measurement.server_core_busy
        return f"{'?' if busy is None else f'{busy:.0%}'} / {measurement.client_core_busy:.0%}"

    def as_dict(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "connections": self.connections,
            "seconds": self.seconds,
            "window_frames": WINDOW_FRAMES,
            "cores": asdict(self.cores),
            "machine": machine(),
            "ingest": [asdict(m) for m in self.measurements],
            "ratios": {
                collector.key: {frames: self.ratios(collector, frames) for frames in FRAMES}
                for collector in COLLECTORS
            },
        }
        if self.memory is not None:
            figures["memory"] = asdict(self.memory) | {
                "sessions_per_gib": self.memory.sessions_per_gib
            }
        return figures


def _ratio_names(collector: Server) -> tuple[str, str]:
    return (f"{collector.key}/floor", f"{collector.key}/bare")


def _row(first: str, *cells: str) -> str:
    return f"{first:<13}" + "".join(f"{cell:>19}" for cell in cells)


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0]}


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _pin(core: int | None) -> Callable[[], None] | None:
    # Pinned before exec, so every thread the process starts later inherits the core.
    return None if core is None else functools.partial(os.sched_setaffinity, 0, {core})


def bench_env(workdir: Path) -> dict[str, str]:
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        # The benchmark measures work per event, not the limiter saying no.
        "RATE_EVENTS_PER_SECOND": "1e9",
        "RATE_BURST": "1000000000",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def prepare_database(env: dict[str, str]) -> None:
    for command in (["migrate", "--noinput", "-v", "0"], ["bootstrap_demo"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode:
            raise BenchError(f"manage.py {command[0]} failed:\n{done.stderr[-2000:]}")


def server_command(server: Server, port: int) -> list[str]:
    return [sys.executable, *server.argv, "--host", HOST, "--port", str(port)]


@contextlib.contextmanager
def running_server(
    server: Server, *, env: dict[str, str], core: int | None, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start a server process on a free port and wait until it listens; always stop it."""
    port = free_port()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            server_command(server, port),
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_pin(core),
        )
    try:
        wait_listening(process, port, log)
        yield process, port
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


def run_load(
    *,
    port: int,
    server_pid: int,
    events_per_frame: int,
    options: Mapping[str, Any],
    core: int | None,
) -> dict[str, Any]:
    """Run the load client process against one server; its figures as a dict."""
    seconds = float(options["seconds"])
    command = [
        sys.executable,
        "-m",
        "benchmarks.clients.load",
        f"--url=ws://{HOST}:{port}{PATH}",
        f"--batch={events_per_frame}",
        f"--connections={options['connections']}",
        f"--window={WINDOW_FRAMES}",
        f"--warmup={WARMUP_SECONDS}",
        f"--seconds={seconds}",
        f"--watch-pid={server_pid}",
    ]
    return run_pinned_client(
        command, core=core, timeout=WARMUP_SECONDS + seconds + 90, what="load client"
    )


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
            preexec_fn=_pin(core),
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise BenchError(f"the {what} did not finish in time") from exc
    if done.returncode:
        raise BenchError(f"the {what} failed: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


# --- the benchmark -----------------------------------------------------------------------------


def measure_server(
    server: Server,
    report: IngestReport,
    *,
    env: dict[str, str],
    workdir: Path,
    options: Mapping[str, Any],
    progress: Progress,
) -> None:
    cores = report.cores
    progress(f"{server.label}: starting")
    log = workdir / f"{server.key}.log"
    with running_server(server, env=env, core=cores.server, log=log) as (process, port):
        for frames, events_per_frame in FRAMES.items():
            figures = run_load(
                port=port,
                server_pid=process.pid,
                events_per_frame=events_per_frame,
                options=options,
                core=cores.client,
            )
            # figures: events, seconds, client_cpu_seconds, server_cpu_seconds (None if unread)
            elapsed = figures["seconds"]
            server_cpu = figures["server_cpu_seconds"]
            measurement = Measurement(
                server=server.key,
                frames=frames,
                events_per_second=figures["events"] / elapsed,
                server_core_busy=None if server_cpu is None else server_cpu / elapsed,
                client_core_busy=figures["client_cpu_seconds"] / elapsed,
            )
            report.measurements.append(measurement)
            progress(f"{server.label}, {frames}: {measurement.events_per_second:,.0f} events/s")


def run(options: Mapping[str, Any], progress: Progress) -> IngestReport:
    report = IngestReport(
        connections=int(options["connections"]),
        seconds=float(options["seconds"]),
        cores=Cores.pick(),
    )
    progress(f"{report.cores.describe()}; {WARMUP_SECONDS:g} s warm-up per measurement")
    with tempfile.TemporaryDirectory(prefix="liveoffers-bench-") as tmp:
        workdir = Path(tmp)
        env = bench_env(workdir)
        progress("preparing the collector's database (migrate, bootstrap_demo)")
        prepare_database(env)
        for server in SERVERS:
            measure_server(
                server, report, env=env, workdir=workdir, options=options, progress=progress
            )
    sessions = int(options["sessions"])
    progress(f"memory: filling a MemoryStore with {sessions:,} sessions")
    report.memory = measure_memory(sessions)
    return report


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=bounded_float(0, 600, above_low=True),
        default=5.0,
        help="measured seconds per run (5)",
    )
    parser.add_argument(
        "--connections", type=bounded_int(1, 1_000), default=8, help="client sockets per run (8)"
    )
    parser.add_argument(
        "--sessions",
        type=bounded_int(1, 10_000_000),
        default=100_000,
        help="sessions held for the memory figure (100,000)",
    )


BENCHMARK = Benchmark(
    help="events/s through /ws/collect/ against bare websockets and a Channels floor; memory per session",
    add_arguments=add_arguments,
    run=run,
)
