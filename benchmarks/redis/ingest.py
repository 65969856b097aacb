"""`bench redis`, ingest: events/s through `/ws/collect/` by Redis-mode front ends and by
embedded `serve`, with the CPU time of each side."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import Progress
from benchmarks.harness import describe_cores, pin_plan, run_load_client, running_servers
from benchmarks.ingest import FRAMES
from benchmarks.redis.figures import (
    EMBEDDED,
    EMBEDDED_SERVE,
    FRONT_END_SERVE,
    REDIS,
    IngestRun,
    RedisReport,
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
            figures = run_load_client(
                [port for _, port in servers],
                events_per_frame=events_per_frame,
                connections=int(options["connections"]),
                seconds=float(options["seconds"]),
                watch_pids=[process.pid for process, _ in servers],
                redis_url=redis_url if mode == REDIS else None,
                core=client_core,
            )
            # figures: the load client's LoadFigures as a dict, one server CPU time a front end
            elapsed = figures["seconds"]
            ours = (
                sum(figures["server_cpu_seconds"])
                + figures["client_cpu_seconds"]
                + figures["redis_cpu_seconds"]
            )
            measured = IngestRun(
                mode=mode,
                front_ends=front_ends,
                frames=frames,
                events_per_second=figures["events"] / elapsed,
                front_ends_busy=sum(figures["server_cpu_seconds"]) / elapsed,
                client_busy=figures["client_cpu_seconds"] / elapsed,
                redis_busy=figures["redis_cpu_seconds"] / elapsed,
                others_busy=max(0.0, figures["machine_busy_seconds"] - ours) / elapsed,
                frames_per_redis_read=(
                    figures["events"] / events_per_frame / figures["redis_reads"]
                    if figures["redis_reads"]
                    else 0.0
                ),
            )
            report.ingest.append(measured)
            progress(
                f"ingest, {label}, {frames}: {measured.events_per_second:,.0f} events/s "
                f"(front ends {measured.front_ends_busy:.0%}, client {measured.client_busy:.0%}, "
                f"redis {measured.redis_busy:.0%}, others {measured.others_busy:.0%} of a core)"
            )
