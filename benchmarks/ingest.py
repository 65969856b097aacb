"""`bench ingest`: events/s acknowledged by the collector socket against two baselines, in one run.

- bare: a `websockets` server that only parses each frame and acks it (benchmarks.bare);
- floor: a Channels consumer under daphne doing the same, the framework's least (benchmarks.floor);
- collector: `manage.py serve`, the real thing: parse, validate, rate limit, apply, write through
  to the event log, ack, on `serve`'s default server (uvicorn); then the same under
  `serve --server daphne`, and with EVENT_LOG=off (what the event log costs).

Each server runs in its own process pinned to one core, and the load client
(benchmarks.clients.load) in another process pinned to a second core, so each side has one core
(Linux: pinning and CPU times come from the kernel). Also reported: memory per live session
(benchmarks.memory).
"""

from __future__ import annotations

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
            on, off = self.rate("collector", frames), self.rate("collector-nolog", frames)
            rows.append(f"event log on / off, {frames}: {on / off:.2f}x")
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
    return row(first, *cells, widths=(13, 19))


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
            figures = run_load_client(
                [port],
                events_per_frame=events_per_frame,
                connections=int(options["connections"]),
                seconds=float(options["seconds"]),
                watch_pids=[process.pid],
                core=cores.client,
            )
            # figures: the load client's LoadFigures as a dict, one server CPU time a server
            elapsed = figures["seconds"]
            (server_cpu,) = figures["server_cpu_seconds"]
            measurement = Measurement(
                server=server.key,
                frames=frames,
                events_per_second=figures["events"] / elapsed,
                server_core_busy=server_cpu / elapsed,
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
                server,
                report,
                env=env | WITHOUT_LOG.get(server.key, {}),
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
