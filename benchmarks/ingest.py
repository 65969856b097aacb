"""`bench ingest`: events/s acknowledged by the collector socket against two baselines, in one run.

- bare: a `websockets` server that only parses each frame and acks it (benchmarks.bare);
- floor: a Channels consumer under daphne doing the same, the framework's least (benchmarks.floor);
- collector: `manage.py serve`, the real thing: parse, validate, rate limit, apply, write through
  to the event log, ack, on `serve`'s default server (uvicorn); then the same under
  `serve --server daphne`, and with EVENT_LOG=off; then what the event log costs: the servers
  with it on and off run side by side, pinned to the same core and loaded at the same time,
  `--log-pairs` times, and the median ratio is given.

Each server runs in its own process pinned to one core, and the load client
(benchmarks.clients.load) in another process pinned to a second core, so each side has one core
(Linux: pinning and CPU times come from the kernel). Also reported: memory per live session
(benchmarks.memory).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import statistics
import tempfile
from argparse import ArgumentParser
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import Benchmark, Progress, bounded_float, bounded_int
from benchmarks.harness import (
    LOAD_CONNECTIONS,
    WARMUP_SECONDS,
    WINDOW_FRAMES,
    Cores,
    Server,
    bench_env,
    machine,
    prepare_database,
    row,
    run_load_client,
    running_server,
)
from benchmarks.memory import MemoryFigures, measure_memory

BASELINES = (
    Server("bare", "bare websockets", ("-m", "benchmarks.bare")),
    Server("floor", "channels floor", ("-m", "benchmarks.floor")),
)
# The collector as `serve` runs it by default (uvicorn), then on its other ASGI server.
COLLECTORS = (
    Server("collector", "collector", ("manage.py", "serve")),
    Server("collector-daphne", "collector daphne", ("manage.py", "serve", "--server", "daphne")),
    # The default server with EVENT_LOG=off: what writing the clickstream through costs.
    Server("collector-nolog", "collector, event log off", ("manage.py", "serve")),
)
WITHOUT_LOG = {"collector-nolog": {"EVENT_LOG": "off"}}
SERVERS = BASELINES + COLLECTORS
FRAMES: dict[str, int] = {"single": 1, "batch of 20": 20}


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
    # The collector with the event log on and off, side by side on one core, a pair a run.
    log_runs: list[Measurement] = field(default_factory=list)
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
        for frames in FRAMES:
            pairs = self.log_ratios(frames)
            listed = ", ".join(f"{ratio:.2f}x" for ratio in pairs)
            how = (
                f" (side by side on one core, median of {len(pairs)}: {listed})"
                if self.log_runs
                else " (one run each)"
            )
            rows.append(f"event log on / off, {frames}: {statistics.median(pairs):.2f}x{how}")
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

    def log_ratios(self, frames: str) -> list[float]:
        """Events/s with the event log on over off: a pair a side-by-side run (the main runs'
        one pair when there were none)."""

        def rates(server: str) -> list[float]:
            runs = [m for m in self.log_runs or self.measurements if m.server == server]
            return [m.events_per_second for m in runs if m.frames == frames]

        return [
            on / off for on, off in zip(rates("collector"), rates("collector-nolog"), strict=True)
        ]

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
            "event_log_on_off": {frames: self.log_ratios(frames) for frames in FRAMES},
            "event_log_runs": [asdict(m) for m in self.log_runs],
        }
        if self.memory is not None:
            figures["memory"] = asdict(self.memory) | {
                "sessions_per_gib": self.memory.sessions_per_gib
            }
        return figures


def _ratio_names(collector: Server) -> tuple[str, str]:
    return (f"{collector.key}/floor", f"{collector.key}/bare")


def _row(first: str, *cells: str) -> str:
    return row(first, *cells, widths=(13, 19))


# --- the benchmark -----------------------------------------------------------------------------


def measure_server(
    server: Server,
    cores: Cores,
    *,
    env: dict[str, str],
    workdir: Path,
    options: Mapping[str, Any],
    progress: Progress,
) -> list[Measurement]:
    measurements = []
    progress(f"{server.label}: starting")
    log = workdir / f"{server.key}.log"
    with running_server(server, env=env, core=cores.server, log=log) as (process, port):
        for frames in FRAMES:
            measurement = load(server, frames, process.pid, port, cores, options)
            measurements.append(measurement)
            progress(f"{server.label}, {frames}: {measurement.events_per_second:,.0f} events/s")
    return measurements


def load(
    server: Server, frames: str, pid: int, port: int, cores: Cores, options: Mapping[str, Any]
) -> Measurement:
    """One run of the load client against the server of `pid` on `port`."""
    figures = run_load_client(
        [port],
        events_per_frame=FRAMES[frames],
        connections=int(options["connections"]),
        seconds=float(options["seconds"]),
        watch_pids=[pid],
        core=cores.client,
    )
    # figures: the load client's LoadFigures as a dict, one server CPU time a server
    elapsed = figures["seconds"]
    (server_cpu,) = figures["server_cpu_seconds"]
    return Measurement(
        server=server.key,
        frames=frames,
        events_per_second=figures["events"] / elapsed,
        server_core_busy=server_cpu / elapsed,
        client_core_busy=figures["client_cpu_seconds"] / elapsed,
    )


def measure_side_by_side(
    servers: tuple[Server, Server],
    cores: Cores,
    *,
    env: dict[str, str],
    workdir: Path,
    options: Mapping[str, Any],
    progress: Progress,
) -> list[Measurement]:
    """Two servers pinned to the same core, each loaded by its own client at the same time:
    each gets about half the core, and whatever slows the machine slows both alike, so their
    ratio is what one costs against the other."""
    measurements = []
    with contextlib.ExitStack() as stack:
        running = [
            stack.enter_context(
                running_server(
                    server,
                    # embedded servers side by side: a record journal each
                    env=env
                    | WITHOUT_LOG.get(server.key, {})
                    | {"RECORD_JOURNAL": str(workdir / f"{server.key}.records")},
                    core=cores.server,
                    log=workdir / f"{server.key}-side-by-side.log",
                )
            )
            for server in servers
        ]
        for frames in FRAMES:
            with concurrent.futures.ThreadPoolExecutor(len(running)) as pool:
                futures = [
                    pool.submit(load, server, frames, process.pid, port, cores, options)
                    for server, (process, port) in zip(servers, running, strict=True)
                ]
                measurements += [future.result() for future in futures]
            first, second = measurements[-2:]
            progress(
                f"side by side, {frames}: {first.server} {first.events_per_second:,.0f}, "
                f"{second.server} {second.events_per_second:,.0f} events/s"
            )
    return measurements


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

        def measure(server: Server) -> list[Measurement]:
            return measure_server(
                server,
                report.cores,
                env=env | WITHOUT_LOG.get(server.key, {}),
                workdir=workdir,
                options=options,
                progress=progress,
            )

        for server in SERVERS:
            report.measurements += measure(server)
        # This machine's runs of one server differ by more than the log costs: the log is
        # measured with the two servers side by side, sharing one core at the same moments.
        # Which of the two starts first alternates, as the first started gets a little less.
        pairs = int(options["log_pairs"])
        for pair in range(pairs):
            progress(
                f"event log on and off side by side on core {report.cores.server}: "
                f"pair {pair + 1} of {pairs}"
            )
            on, off = COLLECTORS[0], COLLECTORS[-1]
            report.log_runs += measure_side_by_side(
                (on, off) if pair % 2 == 0 else (off, on),
                report.cores,
                env=env,
                workdir=workdir,
                options=options,
                progress=progress,
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
        "--connections", type=LOAD_CONNECTIONS, default=8, help="client sockets per run (8)"
    )
    parser.add_argument(
        "--log-pairs",
        type=bounded_int(0, 20),
        default=4,
        help="runs of the collector with the event log on and off side by side, sharing one "
        "core (4; 0: none, the main runs' ratio): the ratio is their median",
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
