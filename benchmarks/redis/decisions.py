"""`bench redis`, decisions: pause deadline to offer frame behind Redis-mode front ends and
`runstream` workers, and behind embedded `serve`; from PostgreSQL, how soon every decision of a
round was recorded."""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import BenchError, Progress
from benchmarks.decisions import (
    WARMUP_CARTS,
    Round,
    decided_round,
    measured_round,
    run_client_process,
)
from benchmarks.harness import (
    cpu_seconds,
    figure,
    machine_busy_seconds,
    on_redis,
    pin_plan,
    redis_cpu_seconds,
    running_servers,
    running_worker,
)
from benchmarks.redis.figures import (
    EMBEDDED,
    EMBEDDED_SERVE,
    FRONT_END_SERVE,
    REDIS,
    DecisionRun,
    RedisReport,
)


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
        ours = sum(cpu_seconds(pid) for pid in self.pids)
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
        deciders = pids[1:] or pids  # embedded: the server decides
        decider_cpu = sum(cpu_seconds(pid) for pid in deciders)
        measured, recorded = decided_round(
            database_url=database_url,
            run_client=client(report.carts, report.window),
            expected=report.carts,
        )
        run = DecisionRun(
            mode,
            workers,
            measured,
            recorded,
            others_busy=cpu.others_busy(),
            deciders_cpu_seconds=sum(cpu_seconds(pid) for pid in deciders) - decider_cpu,
        )
    report.decisions.append(run)
    progress(
        f"decisions, {label}: {measured.offers:,} offers, {measured.on_time:,} of "
        f"{measured.carts:,} carts on time, p50 {figure(measured.from_send.p50)} ms, p99 "
        f"{figure(measured.from_send.p99)} ms; all {recorded.decisions:,} recorded "
        f"{recorded.recorded_after:.2f} s after the first (others {run.others_busy:.0%} of a core)"
    )
