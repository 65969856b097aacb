"""`bench redis`, frames: what one single-event frame costs Redis, by session layout and by the
number of frames a request carries.

The store's own apply script and the one it replaced (each session a hash of fields, its ring
of event ids in 64-byte chunks: `hash_layout/`) take the same frames, one event each, from
`bench ingest`'s visits, with the same keys and arguments. Frames go to Redis one a request, as
a lone front end's quiet socket sends them, and pipelined 8 and 64 to a request, as a busy front
end's coalescer sends them (streaming.redis_store.Coalescer). Redis's own CPU time (`INFO cpu`)
over the frames is the cost; `INFO commandstats` gives the script's share.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib.resources import files

import redis.asyncio as aioredis

from benchmarks import Progress
from benchmarks.harness import redis_cpu_seconds
from benchmarks.memory import shopper_frames
from offers.tokens import new_session_id
from streaming import lua
from streaming.protocol import Event, decode_frame
from streaming.redis_store import _APPLY_LUA, APPLY_BOUNDS, _event_args, _num

PACKED = "packed (now)"
HASH = "hash (before)"
DEPTHS = (1, 8, 64)
IDLE_MS = "1800000"
PAUSE = "30.0"


def hash_layout_script() -> str:
    """The apply script of the hash layout, filled in as the store filled it in."""
    folder = files(__package__) / "hash_layout"
    return lua.script("apply", helpers=True, folder=folder, chunk=64, **APPLY_BOUNDS)


@dataclass(frozen=True, slots=True)
class FrameCost:
    layout: str
    per_request: int  # frames a request
    frames: int
    redis_seconds: float  # Redis's CPU time over the frames
    script_usec: float  # INFO commandstats: the apply script's time a call, its commands included
    requests_read: int  # INFO stats total_reads_processed over the frames

    @property
    def redis_us_per_frame(self) -> float:
        return self.redis_seconds / self.frames * 1e6

    @property
    def frames_per_redis_core(self) -> float:
        """Single-event frames a second that keep one Redis core busy, at this cost."""
        return self.frames / self.redis_seconds if self.redis_seconds else 0.0


def single_event_visits(count: int) -> list[list[Event]]:
    """`count` distinct visits of bench ingest, each as its events in order."""
    visits = []
    for number in range(count):
        events: list[Event] = []
        for frame in shopper_frames(number):
            events += [event for event in decode_frame(frame) if isinstance(event, Event)]
        visits.append(events)
    return visits


def frame_calls(prefix: str, frames: int) -> list[tuple[list[str], list[str | bytes]]]:
    """`frames` apply calls of one event each: sessions' visits interleaved, as live traffic."""
    visits = single_event_visits(64)
    calls: list[tuple[list[str], list[str | bytes]]] = []
    now = 1_800_000_000.0
    while len(calls) < frames:
        sessions = [(new_session_id(), visits[n % len(visits)]) for n in range(256)]
        for step in range(max(len(visit) for _, visit in sessions)):
            for session_id, visit in sessions:
                if step < len(visit) and len(calls) < frames:
                    keys = [
                        f"{prefix}s:{session_id}",
                        f"{prefix}o:{session_id}",
                        f"{prefix}pauses",
                        f"{prefix}live",
                        f"{prefix}carts",
                    ]
                    args = [session_id, "bench", _num(now + step), IDLE_MS, PAUSE, "0"]
                    calls.append((keys, [*args, *_event_args(visit[step])]))
    return calls


async def _cost(
    client: aioredis.Redis, layout: str, script: str, per_request: int, frames: int
) -> FrameCost:
    sha = await client.script_load(script)
    calls = frame_calls(f"bench:{per_request}:", frames)
    await client.config_resetstat()
    reads = int((await client.info("stats"))["total_reads_processed"])
    cpu = await redis_cpu_seconds(client)
    for start in range(0, len(calls), per_request):
        chunk = calls[start : start + per_request]
        if per_request == 1:
            keys, args = chunk[0]
            await client.evalsha(sha, len(keys), *keys, *args)
            continue
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in chunk:
                pipe.evalsha(sha, len(keys), *keys, *args)
            await pipe.execute()
    used = await redis_cpu_seconds(client) - cpu
    read = int((await client.info("stats"))["total_reads_processed"]) - reads
    script_stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
    await client.flushdb()
    return FrameCost(
        layout=layout,
        per_request=per_request,
        frames=len(calls),
        redis_seconds=used,
        script_usec=float(script_stats.get("usec_per_call", 0.0)),
        requests_read=read,
    )


async def measure_frames(redis_url: str, frames: int, progress: Progress) -> list[FrameCost]:
    client = aioredis.Redis.from_url(redis_url)
    costs: list[FrameCost] = []
    try:
        for layout, script in ((HASH, hash_layout_script()), (PACKED, _APPLY_LUA)):
            for per_request in DEPTHS:
                cost = await _cost(client, layout, script, per_request, frames)
                costs.append(cost)
                progress(
                    f"frames, {layout}, {per_request} a request: "
                    f"{cost.redis_us_per_frame:.1f} µs of Redis CPU a frame "
                    f"(script {cost.script_usec:.1f} µs)"
                )
    finally:
        await client.aclose()
    return costs


def measure_frame_costs(redis_url: str, frames: int, progress: Progress) -> list[FrameCost]:
    return asyncio.run(measure_frames(redis_url, frames, progress))
