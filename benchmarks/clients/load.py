"""The load client of `bench ingest` and `bench redis`: collector frames pipelined over N
sockets, acks counted.

It runs as its own process, pinned to its own core, so the server under test has a core to
itself; it is kept as light as a Python client gets (websockets' asyncio client, frames built
from pre-encoded pieces, one coroutine per socket):

    python -m benchmarks.clients.load --url ws://127.0.0.1:PORT/ws/collect/?site=demo --batch 20

and prints its figures as one JSON object on stdout. Given several `--url`s (front ends), it
deals the sockets out in turn; it also reports the CPU time of the processes of `--watch-pid`,
of the Redis server of `--redis-url`, and of the whole machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from benchmarks.harness import (
    WARMUP_SECONDS,
    WINDOW_FRAMES,
    cpu_seconds,
    machine_busy_seconds,
    redis_cpu_seconds,
    redis_reads,
)

# One shopper's mix of events, cycled. Products in carts stay few, so a long run never fills
# a cart (MAX_CART_LINES) and every event is applied.
EVENT_BODIES: tuple[str, ...] = (
    '"event":"page_view","props":{"url":"/","page_type":"home"}}',
    '"event":"search","props":{"query":"espresso machine"}}',
    '"event":"page_view","props":{"url":"/search?q=espresso+machine","page_type":"search"}}',
    '"event":"product_view","props":{"product_id":"sku-4","price":19.99}}',
    '"event":"product_view","props":{"product_id":"sku-7","price":249.0,"category":"Kitchen"}}',
    '"event":"add_to_cart","props":{"product_id":"sku-1","price":19.99,"quantity":1}}',
    '"event":"page_view","props":{"url":"/products/sku-9","page_type":"product"}}',
    '"event":"heartbeat"}',
    '"event":"add_to_cart","props":{"product_id":"sku-2","price":129.0,"quantity":2}}',
    '"event":"page_view","props":{"url":"/cart","page_type":"cart"}}',
)


class LoadError(RuntimeError):
    pass


class _Reply(msgspec.Struct):
    type: str
    ids: list[str] = []


_decode_reply = msgspec.json.Decoder(_Reply).decode


class Frames:
    """The frames of one session: `events_per_frame` 1 makes track frames, more make batches."""

    def __init__(self, session: int, events_per_frame: int) -> None:
        self.prefix = f"c{session}-"
        self.events_per_frame = events_per_frame
        self.sent_events = 0

    def next(self) -> str:
        first = self.sent_events
        self.sent_events += self.events_per_frame
        prefix, bodies = self.prefix, EVENT_BODIES
        if self.events_per_frame == 1:
            return f'{{"type":"track","id":"{prefix}{first}",{bodies[first % len(bodies)]}'
        events = ",".join(
            f'{{"id":"{prefix}{n}",{bodies[n % len(bodies)]}'
            for n in range(first, first + self.events_per_frame)
        )
        return f'{{"type":"batch","events":[{events}]}}'


@dataclass(slots=True)
class Tally:
    events: int = 0


@dataclass(frozen=True, slots=True)
class LoadFigures:
    events: int
    seconds: float
    client_cpu_seconds: float
    server_cpu_seconds: list[float]  # each watched process's
    redis_cpu_seconds: float  # 0.0 when no Redis server is watched
    redis_reads: int  # the Redis server's reads from all its clients (0 when not watched)
    machine_busy_seconds: float  # every core's busy time, all processes

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds


async def drive(
    ws: ClientConnection, frames: Frames, window: int, tally: Tally, stop: asyncio.Event
) -> None:
    """Keep `window` frames in flight on one socket until `stop`, counting acknowledged ids."""
    per_frame = frames.events_per_frame
    for _ in range(window):
        await ws.send(frames.next())
    # Acks may be coalesced: a new frame goes out for each frame's worth of acknowledged ids.
    unmatched = 0
    while not stop.is_set():
        reply = _decode_reply(await ws.recv())
        if reply.type == "ack":
            tally.events += len(reply.ids)
            unmatched += len(reply.ids)
            while unmatched >= per_frame:
                unmatched -= per_frame
                await ws.send(frames.next())
        elif reply.type != "welcome":
            raise LoadError(f"the server refused a frame: {reply.type} {reply.ids}")


async def session(
    url: str, number: int, events_per_frame: int, window: int, tally: Tally, stop: asyncio.Event
) -> None:
    # Leaving the block normally closes with 1000, so the server sees a clean goodbye.
    async with connect(
        url, compression=None, open_timeout=20, close_timeout=2, ping_interval=None
    ) as ws:
        await drive(ws, Frames(number, events_per_frame), window, tally, stop)


async def measure(
    tally: Tally,
    *,
    warmup: float,
    seconds: float,
    watch_pids: Sequence[int],
    redis: aioredis.Redis | None,
) -> LoadFigures:
    await asyncio.sleep(warmup)
    events, start, cpu = tally.events, time.perf_counter(), time.process_time()
    servers = [cpu_seconds(pid) for pid in watch_pids]
    redis_cpu = await redis_cpu_seconds(redis) if redis else 0.0
    reads = await redis_reads(redis) if redis else 0
    busy = machine_busy_seconds()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    return LoadFigures(
        events=tally.events - events,
        seconds=elapsed,
        client_cpu_seconds=time.process_time() - cpu,
        server_cpu_seconds=[
            cpu_seconds(pid) - before for pid, before in zip(watch_pids, servers, strict=True)
        ],
        redis_cpu_seconds=(await redis_cpu_seconds(redis) - redis_cpu) if redis else 0.0,
        redis_reads=(await redis_reads(redis) - reads) if redis else 0,
        machine_busy_seconds=machine_busy_seconds() - busy,
    )


async def run_load(
    urls: Sequence[str],
    *,
    events_per_frame: int = 1,
    connections: int = 8,
    window: int = WINDOW_FRAMES,
    warmup: float = WARMUP_SECONDS,
    seconds: float = 5.0,
    watch_pids: Sequence[int] = (),
    redis_url: str | None = None,
) -> LoadFigures:
    """Load the servers at `urls`, the sockets dealt out in turn; counts ids acknowledged
    during `seconds` after `warmup`."""
    tally, stop = Tally(), asyncio.Event()
    redis = aioredis.Redis.from_url(redis_url) if redis_url else None
    try:
        async with asyncio.timeout(warmup + seconds + 60):
            sessions = [
                asyncio.create_task(
                    session(urls[number % len(urls)], number, events_per_frame, window, tally, stop)
                )
                for number in range(connections)
            ]
            timer = asyncio.create_task(
                measure(tally, warmup=warmup, seconds=seconds, watch_pids=watch_pids, redis=redis)
            )
            try:
                done, _ = await asyncio.wait(
                    [timer, *sessions], return_when=asyncio.FIRST_COMPLETED
                )
                if timer not in done:
                    ended = done.pop()
                    raise ended.exception() or LoadError("a socket closed before the run ended")
                stop.set()
                await asyncio.wait(sessions, timeout=10)
                return timer.result()
            finally:
                for task in (timer, *sessions):
                    task.cancel()
                await asyncio.gather(timer, *sessions, return_exceptions=True)
    finally:
        if redis is not None:
            await redis.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url", action="append", required=True, help="a server to load (repeat for several)"
    )
    parser.add_argument("--batch", type=int, default=1, help="events per frame (1: track)")
    parser.add_argument("--connections", type=int, default=8, help="sockets in all")
    parser.add_argument(
        "--window", type=int, default=WINDOW_FRAMES, help="frames in flight per socket"
    )
    parser.add_argument("--warmup", type=float, default=WARMUP_SECONDS)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--watch-pid",
        type=int,
        action="append",
        default=[],
        help="also report this process's CPU time (repeat for several)",
    )
    parser.add_argument("--redis-url", help="also report this Redis server's CPU time")
    args = parser.parse_args(argv)
    try:
        figures = asyncio.run(
            run_load(
                args.url,
                events_per_frame=args.batch,
                connections=args.connections,
                window=args.window,
                warmup=args.warmup,
                seconds=args.seconds,
                watch_pids=args.watch_pid,
                redis_url=args.redis_url,
            )
        )
    except (LoadError, WebSocketException, RedisError, OSError, TimeoutError) as exc:
        sys.exit(f"load: {type(exc).__name__}: {exc}")
    json.dump(asdict(figures), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
