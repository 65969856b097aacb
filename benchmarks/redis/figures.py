"""What `bench redis` measures, and its table: ingest runs, decision rounds, Redis memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.decisions import Recorded, Round
from benchmarks.harness import figure, machine, row
from benchmarks.memory import GIB, MemoryFigures
from benchmarks.redis.capacity import LoadRun
from benchmarks.redis.frames import FrameCost

# The two modes, and the server each runs: embedded (the baseline) decides in `serve` itself;
# Redis mode's front ends leave deciding to `runstream` workers.
EMBEDDED = "embedded"
REDIS = "redis"
EMBEDDED_SERVE = ("manage.py", "serve")
FRONT_END_SERVE = ("manage.py", "serve", "--no-worker")


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
    # Frames over the Redis server's reads: how many frames a front end's request carried.
    frames_per_redis_read: float = 0.0

    @property
    def events_per_front_end_core(self) -> float:
        """Events per second of front-end CPU: what a front end does with a core of its own."""
        return self.events_per_second / self.front_ends_busy if self.front_ends_busy else 0.0

    @property
    def redis_us_per_event(self) -> float:
        return self.redis_busy / self.events_per_second * 1e6 if self.events_per_second else 0.0


@dataclass(frozen=True, slots=True)
class DecisionRun:
    mode: str
    workers: int  # 0: embedded, where the server decides
    round: Round
    recorded: Recorded
    # The rest of the machine's busy time during the round, in cores (see CpuWatch).
    others_busy: float = 0.0
    # CPU time of the deciding processes (the workers; embedded: the server) over the round,
    # its recording included
    deciders_cpu_seconds: float = 0.0

    @property
    def decider_us_per_decision(self) -> float:
        decisions = self.recorded.decisions
        return self.deciders_cpu_seconds / decisions * 1e6 if decisions else 0.0

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
    # MEMORY USAGE of the keys, summed: the sessions' states and the sorted sets
    key_bytes: dict[str, int]
    offer_used_memory: int  # INFO used_memory after an offer for each session minus before
    offer_key_bytes: int  # MEMORY USAGE of the offers' frame keys, summed
    offer_state_bytes: int  # what the offer fields added to the sessions' states
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
    frames: list[FrameCost] = field(default_factory=list)
    capacity: list[LoadRun] = field(default_factory=list)
    capacity_placement: str = ""
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
        if self.frames:
            rows.append("")
            rows += self._frame_rows()
        if self.capacity:
            rows.append("")
            rows += self._capacity_rows()
        rows.append("")
        rows += self._decision_rows()
        if self.memory is not None:
            rows.append("")
            rows += self._memory_rows(self.memory, self.embedded_memory)
        return "\n".join(rows)

    def _ingest_rows(self) -> list[str]:
        widths = (9, 11, 12, 10, 11, 11, 8, 8, 8, 15, 15, 12)
        rows = [
            f"ingest (events/s acknowledged through /ws/collect/, {self.connections} connections "
            f"over all front ends, {self.seconds:g} s each; core use in % of one core)",
            row(
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
                "frames/read",
                widths=widths,
            ),
        ]
        for measured in self.ingest:
            embedded = self.ingest_rate(EMBEDDED, 1, measured.frames)
            in_redis = measured.mode == REDIS
            rows.append(
                row(
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
                    f"{measured.frames_per_redis_read:.1f}" if in_redis else "-",
                    widths=widths,
                )
            )
        placement = "; ".join(f"{key}: {value}" for key, value in self.ingest_placement.items())
        rows.append(
            "others: the rest of the machine's busy time (other work, the kernel's loopback "
            f"traffic); events/fe core: events/s per core of front-end CPU time; {placement}"
        )
        return rows

    def _frame_rows(self) -> list[str]:
        widths = (14, 15, 15, 11, 16, 22)
        rows = [
            f"frames (Redis CPU per single-event frame, {self.frames[0].frames:,} frames of "
            "bench ingest's visits to the apply script, each layout on the same Redis)",
            row(
                "layout",
                "frames/request",
                "redis µs/frame",
                "script µs",
                "frames/read",
                "frames/s a Redis core",
                widths=widths,
            ),
        ]
        for cost in self.frames:
            rows.append(
                row(
                    cost.layout,
                    str(cost.per_request),
                    f"{cost.redis_us_per_frame:.1f}",
                    f"{cost.script_usec:.1f}",
                    f"{cost.frames / max(1, cost.requests_read):.1f}",
                    f"{cost.frames_per_redis_core:,.0f}",
                    widths=widths,
                )
            )
        rows.append(
            "frames/read: as Redis read them (INFO total_reads_processed); script "
            "µs: the apply script a call, its commands included (INFO commandstats); frames/s a "
            "Redis core: 1 s over the Redis CPU a frame"
        )
        return rows

    def _capacity_rows(self) -> list[str]:
        widths = (14, 10, 10, 8, 16, 16, 9, 9, 9, 8)
        first = self.capacity[0]
        rows = [
            f"capacity (single-event frames offered at random by {first.front_ends} front ends, "
            "each with one request in flight and the frames that came meanwhile in the next; "
            "each layout on the same Redis)",
            row(
                "layout",
                "offered/s",
                "carried/s",
                "redis",
                "redis µs/frame",
                "frames/request",
                "p50 ms",
                "p99 ms",
                "max ms",
                "client",
                widths=widths,
            ),
        ]
        for run in self.capacity:
            rows.append(
                row(
                    run.layout,
                    f"{run.offered:,.0f}",
                    f"{run.carried:,.0f}",
                    f"{run.redis_busy:.0%}",
                    f"{run.redis_us_per_frame:.1f}",
                    f"{run.frames_per_request:.1f}",
                    _ms(run.latency_ms.p50),
                    _ms(run.latency_ms.p99),
                    _ms(run.latency_ms.max),
                    f"{run.client_seconds / run.seconds:.0%}" if run.seconds else "-",
                    widths=widths,
                )
            )
        rows.append(
            "redis: Redis's CPU over the run, in % of one core; ms: from a frame's arrival to its "
            f"reply; client: the load client's CPU; {self.capacity_placement}"
        )
        return rows

    def _decision_rows(self) -> list[str]:
        widths = (9, 8, 7, 7, 8, 7, 7, 7, 7, 8, 8, 8, 8, 10, 11, 13, 11, 8, 12)
        rows = [
            f"decisions (pause deadline to offer frame at the client, ms from the send; "
            f"{self.carts:,} carts paced over {self.window:g} s, pause {self.pause_seconds:g} s; "
            f"{self.decisions_placement})",
            row(
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
                "last → all",
                "others",
                "µs/decision",
                widths=widths,
            ),
        ]
        for run in self.decisions:
            measured, late = run.round, run.round.from_send
            due, decided = run.due_per_second, run.recorded.decided_per_second
            rows.append(
                row(
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
                    f"{run.recorded.after_last:.2f} s",
                    f"{run.others_busy:.0%}",
                    f"{run.decider_us_per_decision:,.0f}",
                    widths=widths,
                )
            )
        rows.append(
            "on time: sockets with exactly one offer, within 1 s of the deadline; ack: latency "
            "from the ack (a lower bound); due/s: pauses falling due a second; decided/s: "
            "decisions from the first to the last; recorded/s: decisions over the time from the "
            "first until all were in PostgreSQL (all recorded: that time; the decisions and their "
            "offers, their reasons follow in records of their own); last → all: from the last "
            "decision until all were in PostgreSQL; others: the rest of the machine's busy time "
            "during the round, in % of one core; µs/decision: CPU time of the deciding processes "
            "(the workers; embedded: the server, its sockets too) over the round, recording "
            "included, per decision"
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
            f"{memory.offer_key_bytes / memory.sessions:,.0f} and the state's offer fields "
            f"{memory.offer_state_bytes / memory.sessions:,.0f} by MEMORY USAGE)",
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
            "frames": [
                asdict(cost)
                | {
                    "redis_us_per_frame": cost.redis_us_per_frame,
                    "frames_per_redis_core": cost.frames_per_redis_core,
                }
                for cost in self.frames
            ],
            "capacity": [
                asdict(run)
                | {
                    "carried": run.carried,
                    "redis_busy": run.redis_busy,
                    "redis_us_per_frame": run.redis_us_per_frame,
                    "frames_per_request": run.frames_per_request,
                }
                for run in self.capacity
            ],
            "decisions": [
                {
                    "mode": run.mode,
                    "workers": run.workers,
                    "round": {
                        name: value
                        for name, value in asdict(run.round).items()
                        if name != "recorded"  # the run's own, below
                    }
                    | {"exactly_one_each": run.round.exactly_one_each},
                    "recorded": run.recorded.as_dict(),
                    "others_busy": run.others_busy,
                    "due_per_second": run.due_per_second,
                    "every_cart_one_offer": run.every_cart_one_offer,
                    "deciders_cpu_seconds": run.deciders_cpu_seconds,
                    "decider_us_per_decision": run.decider_us_per_decision,
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


def _ms(value: float) -> str:
    return figure(value)
