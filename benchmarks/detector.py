"""`bench detector`: the pause detector's cost per tick, against a scan of every live session.

A `MemoryStore` holds N sessions with carts whose last activity is spread over one pause
(30 s), as in a steady flow of shoppers. The worker asks it each tick for the sessions whose
pause deadline has passed (`claim_due`), with nothing due and with 1% of the sessions due.
The baseline is what a detector without a heap of deadlines does: look at every live session's
deadline each tick.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from argparse import ArgumentParser
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks import BenchError, Benchmark, Progress, bounded_float, bounded_ints
from benchmarks.harness import figure, row
from streaming.protocol import Event, decode_frame
from streaming.state import SessionState
from streaming.store import MemoryStore

PAUSE_SECONDS = 30.0
# The Decider's batch size: at most this many pauses claimed a tick.
LIMIT = 5000
START = 1_764_000_000.0
# Sessions due per tick, besides none: a fixed few, and 1% of the live sessions.
FEW_DUE = 10
DUE_SHARE = 100  # 1 in 100
# Ticks timed together when nothing is due (one is well under a microsecond's resolution).
IDLE_TICKS_PER_SAMPLE = 1000
MIN_SAMPLES = 20
MAX_FILLS = 50
METHODS = ("heap", "scan")

Claim = Callable[[float, int], Awaitable[list[SessionState]]]


@dataclass(frozen=True, slots=True)
class TickFigures:
    sessions: int
    method: str
    due_per_tick: int
    ticks: int
    us_per_tick: float  # median over the timed ticks

    @property
    def us_per_due(self) -> float | None:
        return self.us_per_tick / self.due_per_tick if self.due_per_tick else None


@dataclass
class DetectorReport:
    seconds: float
    figures: list[TickFigures] = field(default_factory=list)

    def find(self, sessions: int, due: int, method: str) -> TickFigures:
        for figures in self.figures:
            if (figures.sessions, figures.due_per_tick, figures.method) == (sessions, due, method):
                return figures
        raise KeyError((sessions, due, method))

    def cases(self) -> list[tuple[int, int]]:
        return sorted({(f.sessions, f.due_per_tick) for f in self.figures})

    def table(self) -> str:
        rows = [
            f"detector (cost of one tick, pause {PAUSE_SECONDS:g} s, limit {LIMIT:,}, median µs; "
            "heap: MemoryStore.claim_due, scan: every live session's deadline)",
            _row(
                "live sessions",
                "due/tick",
                "heap µs/tick",
                "heap µs/due",
                "scan µs/tick",
                "scan µs/due",
                "scan/heap",
            ),
        ]
        for sessions, due in self.cases():
            heap = self.find(sessions, due, "heap")
            scan = self.find(sessions, due, "scan")
            rows.append(
                _row(
                    f"{sessions:,}",
                    f"{due:,}",
                    _us(heap.us_per_tick),
                    _us(heap.us_per_due),
                    _us(scan.us_per_tick),
                    _us(scan.us_per_due),
                    f"{scan.us_per_tick / heap.us_per_tick:,.0f}x",
                )
            )
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pause_seconds": PAUSE_SECONDS,
            "limit": LIMIT,
            "seconds": self.seconds,
            "ticks": [asdict(f) | {"us_per_due": f.us_per_due} for f in self.figures],
        }


def _row(first: str, *cells: str) -> str:
    return row(first, *cells, widths=(15, 14))


def _us(value: float | None) -> str:
    return figure(value, decimals=2)


# --- the sessions ------------------------------------------------------------------------------


def _add_to_cart() -> Event:
    frame = (
        '{"type":"track","id":"e-1","event":"add_to_cart",'
        '"props":{"product_id":"sku-espresso","price":249.0,"quantity":1}}'
    )
    (event,) = decode_frame(frame)
    if not isinstance(event, Event):
        raise BenchError(f"the benchmark's own event is refused: {event}")
    return event


def activity_at(number: int, sessions: int) -> float:
    """When session `number` of `sessions` last added to its cart: spread over one pause."""
    return START + PAUSE_SECONDS * number / sessions


def tick_time(tick: int, sessions: int, due: int) -> float:
    """The clock at tick `tick` of a walk through the deadlines, `due` more passed each tick.

    Half a session's spacing before the next one's deadline, so each tick claims exactly `due`.
    """
    return activity_at(due * (tick + 1), sessions) - PAUSE_SECONDS / sessions / 2 + PAUSE_SECONDS


def due_counts(sessions: int) -> list[int]:
    """Sessions due per tick to measure: none, a fixed few, and 1% of the live sessions."""
    return sorted({0, FEW_DUE, sessions // DUE_SHARE})


async def fill(sessions: int) -> tuple[MemoryStore, list[SessionState]]:
    """A store holding `sessions` sessions with a cart, and the same states as a plain list."""
    store = MemoryStore(pause_seconds=PAUSE_SECONDS, idle_seconds=3600.0)
    event = _add_to_cart()
    states = []
    for number in range(sessions):
        session_id, now = f"s-{number}", activity_at(number, sessions)
        states.append(await store.open(session_id=session_id, site="demo", now=now))
        await store.apply(session_id=session_id, site="demo", events=[event], now=now)
    return store, states


def scanner(states: Sequence[SessionState]) -> Claim:
    """The baseline's claim: every live session's deadline looked at, each tick."""

    async def claim(now: float, limit: int) -> list[SessionState]:
        due = []
        for state in states:
            deadline = state.pause_deadline(PAUSE_SECONDS)
            if deadline is not None and deadline <= now:
                state.decided_seq = state.activity_seq  # claimed once, as the store does
                due.append(state)
                if len(due) >= limit:
                    break
        return due

    return claim


# --- the measurements --------------------------------------------------------------------------


async def _claim_for(method: str, sessions: int) -> Claim:
    store, states = await fill(sessions)
    return store.claim_due if method == "heap" else scanner(states)


async def idle_ticks(method: str, sessions: int, seconds: float) -> TickFigures:
    """Ticks at a time before every deadline: the cost of finding that nothing is due."""
    claim = await _claim_for(method, sessions)
    now = START + PAUSE_SECONDS - 1.0
    # A scan of many sessions is slow enough to time one tick at a time.
    per_sample = IDLE_TICKS_PER_SAMPLE if method == "heap" else 1
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < MIN_SAMPLES or time.perf_counter() - began < seconds:
        start = time.perf_counter()
        for _ in range(per_sample):
            if await claim(now, LIMIT):
                raise BenchError(f"{method}: a session was due before any deadline")
        samples.append((time.perf_counter() - start) / per_sample)
        if len(samples) >= 100_000:
            break
    return TickFigures(
        sessions, method, 0, len(samples) * per_sample, statistics.median(samples) * 1e6
    )


async def due_ticks(method: str, sessions: int, due: int, seconds: float) -> TickFigures:
    """Ticks that each find `due` sessions due, walking through the spread of deadlines.

    A walk ends when the sessions run out; the next starts on a freshly filled store.
    """
    samples: list[float] = []
    began: float | None = None

    def enough() -> bool:
        assert began is not None
        return len(samples) >= MIN_SAMPLES and time.perf_counter() - began >= seconds

    for _ in range(MAX_FILLS):
        claim = await _claim_for(method, sessions)
        # Refilling counts towards the time spent, the first filling does not.
        began = time.perf_counter() if began is None else began
        for tick in range(sessions // due):
            now = tick_time(tick, sessions, due)
            start = time.perf_counter()
            claimed = await claim(now, LIMIT)
            samples.append(time.perf_counter() - start)
            if len(claimed) != due:
                raise BenchError(f"{method}: tick {tick} found {len(claimed)} due, not {due}")
            if enough():
                break
        if enough():
            break
    return TickFigures(sessions, method, due, len(samples), statistics.median(samples) * 1e6)


async def ticks(method: str, sessions: int, due: int, seconds: float) -> TickFigures:
    if due == 0:
        return await idle_ticks(method, sessions, seconds)
    return await due_ticks(method, sessions, due, seconds)


def measure(
    sessions: int, *, seconds: float, progress: Progress | None = None
) -> list[TickFigures]:
    """Heap and scan for `sessions` live sessions (at least 100), each number due per tick."""
    if sessions < DUE_SHARE:
        raise ValueError(f"need at least {DUE_SHARE} sessions for 1% of them to be due")
    figures = []
    for due in due_counts(sessions):
        for method in METHODS:
            tick = asyncio.run(ticks(method, sessions, due, seconds))
            if progress is not None:
                progress(
                    f"{sessions:,} sessions, {due:,} due, {method}: "
                    f"{_us(tick.us_per_tick)} µs/tick over {tick.ticks:,} ticks"
                )
            figures.append(tick)
    return figures


def run(options: Mapping[str, Any], progress: Progress) -> DetectorReport:
    report = DetectorReport(seconds=float(options["seconds"]))
    for sessions in options["sessions"]:
        progress(f"filling stores of {sessions:,} sessions with carts")
        report.figures += measure(sessions, seconds=report.seconds, progress=progress)
    return report


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--sessions",
        type=bounded_ints(DUE_SHARE, 2_000_000),
        default=[1_000, 100_000],
        help="live sessions, comma-separated (1000,100000)",
    )
    parser.add_argument(
        "--seconds",
        type=bounded_float(0, 60, above_low=True),
        default=1.0,
        help="least measured seconds per figure (1)",
    )


BENCHMARK = Benchmark(
    help="pause detector: claim_due per tick with 1,000 and 100,000 live sessions, against a scan",
    add_arguments=add_arguments,
    run=run,
)
