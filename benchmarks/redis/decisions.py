"""`bench redis`, decisions: pause deadline to offer frame behind Redis-mode front ends and
`runstream` workers, and behind embedded `serve`; from PostgreSQL, how soon every decision of a
round was recorded."""

from __future__ import annotations

import concurrent.futures
import contextlib
import resource
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from benchmarks import BenchError, Progress
from benchmarks.decisions import WARMUP_CARTS, Round, measured_round, run_client_process
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
    Recorded,
    RedisReport,
)

# How often the database is asked how many decisions it holds, while a round runs.
RECORD_POLL_SECONDS = 0.02
RECORDS_TIMEOUT = 120.0


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
        f"{measured.carts:,} carts on time, p50 {figure(measured.from_send.p50)} ms, p99 "
        f"{figure(measured.from_send.p99)} ms; all {recorded.decisions:,} recorded "
        f"{recorded.recorded_after:.2f} s after the first (others {run.others_busy:.0%} of a core)"
    )
