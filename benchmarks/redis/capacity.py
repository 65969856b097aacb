"""`bench redis`, capacity: how many single-event frames a second one Redis core carries, when
front ends offer them at a steady rate.

A front end keeps one apply request in flight and sends every frame that came meanwhile as the
next pipeline (streaming.redis_store.Coalescer): a quiet front end sends frames one a request,
and the busier Redis gets, the more each request carries. Here `front_ends` connections play
that rule with the apply script of each layout (`frames.py`) on the same Redis: frames arrive
at random (a Poisson stream a front end, `offered` a second in all), each session's frames on
one connection and in order; a connection with nothing in flight sends what has arrived, and
sends again as soon as its reply is in. The client is one plain loop over non-blocking sockets
with the requests encoded beforehand, so that it stays faster than the Redis it measures.
Redis's own CPU time over the run (`INFO cpu`) is the cost; the latency of a frame runs from its
arrival to its reply.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import socket
import time
import urllib.parse
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import redis

from benchmarks import Progress
from benchmarks.decisions import Spread
from benchmarks.redis.frames import HASH, PACKED, frame_calls, hash_layout_script
from streaming.redis_store import _APPLY_LUA

FRONT_ENDS = 8


@dataclass(frozen=True, slots=True)
class LoadRun:
    layout: str
    offered: float  # frames a second, all front ends together
    front_ends: int
    frames: int
    seconds: float  # from the first arrival to the last reply
    redis_seconds: float  # Redis's CPU time over the run
    client_seconds: float  # the client's own CPU time over the run
    requests: int  # requests sent (a pipeline is one)
    errors: int  # error replies: none, or the figures are void
    latency_ms: Spread  # a frame's arrival to its reply

    @property
    def carried(self) -> float:
        """Frames a second Redis answered."""
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def redis_busy(self) -> float:
        """Redis's CPU over the run, in cores."""
        return self.redis_seconds / self.seconds if self.seconds else 0.0

    @property
    def redis_us_per_frame(self) -> float:
        return self.redis_seconds / self.frames * 1e6 if self.frames else 0.0

    @property
    def frames_per_request(self) -> float:
        return self.frames / self.requests if self.requests else 0.0


def replies_in(buffer: bytes) -> tuple[int, int, int]:
    """The complete RESP2 replies at the start of `buffer`: (replies, errors, bytes they take).

    The apply script answers a status string, a bulk string or an error; arrays are read too.
    """
    replies = errors = 0
    position = 0
    while True:
        end = _reply_end(buffer, position)
        if end is None:
            return replies, errors, position
        replies += 1
        errors += buffer[position : position + 1] == b"-"
        position = end


def _reply_end(buffer: bytes, start: int) -> int | None:
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, head = buffer[start : start + 1], buffer[start + 1 : line_end]
    after = line_end + 2
    if kind in (b"+", b"-", b":"):
        return after
    if kind not in (b"$", b"*"):
        raise ValueError(f"not a RESP2 reply: {buffer[start : start + 20]!r}")
    length = int(head)
    if kind == b"$":
        end = after + length + 2 if length >= 0 else after
        return end if len(buffer) >= end else None
    position: int | None = after
    for _ in range(max(length, 0)):
        position = _reply_end(buffer, position) if position is not None else None
    return position


def command(*parts: str | bytes | int) -> bytes:
    """One command as RESP2 sends it: an array of bulk strings."""
    encoded = [part if isinstance(part, bytes) else str(part).encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def _requests(sha: str, calls: Sequence[tuple[list[str], list[str | bytes]]]) -> list[bytes]:
    return [command("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls]


def _arrivals(
    requests: list[bytes], keys: list[str], offered: float, front_ends: int, seed: int
) -> list[tuple[float, int, bytes]]:
    """(time from the start, front end, request) in time order: each session on one front end,
    each front end's share of `offered` its share of the frames, so that all end together."""
    lanes: list[list[bytes]] = [[] for _ in range(front_ends)]
    for request, key in zip(requests, keys, strict=True):
        lanes[zlib.crc32(key.encode()) % front_ends].append(request)
    rng = random.Random(seed)
    arrivals = []
    for lane, lane_requests in enumerate(lanes):
        at, rate = 0.0, offered * len(lane_requests) / len(requests)
        for request in lane_requests:
            at += rng.expovariate(rate)
            arrivals.append((at, lane, request))
    arrivals.sort(key=lambda arrival: arrival[0])
    return arrivals


@contextlib.contextmanager
def _connections(url: str, count: int) -> Iterator[list[socket.socket]]:
    where = urllib.parse.urlsplit(url)
    database = where.path.lstrip("/") or "0"
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            connection = socket.create_connection((where.hostname, where.port or 6379), timeout=10)
            sockets.append(connection)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.sendall(command("SELECT", database))
            if not connection.recv(64).startswith(b"+OK"):
                raise RuntimeError(f"Redis refused SELECT {database}")
            connection.setblocking(False)
        yield sockets
    finally:
        for connection in sockets:
            connection.close()


def _redis_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _play(
    sockets: list[socket.socket], arrivals: list[tuple[float, int, bytes]]
) -> tuple[list[float], int, int]:
    """Send the arrivals as the front ends' coalescers would: (latencies, requests, errors)."""
    lanes = len(sockets)
    waiting: list[list[tuple[float, bytes]]] = [[] for _ in range(lanes)]
    in_flight: list[list[float] | None] = [None] * lanes
    answered = [0] * lanes
    buffers = [b""] * lanes
    latencies: list[float] = []
    requests = errors = 0
    selector = selectors.DefaultSelector()
    for lane, connection in enumerate(sockets):
        selector.register(connection, selectors.EVENT_READ, lane)

    def send(lane: int) -> None:
        nonlocal requests
        batch, waiting[lane] = waiting[lane], []
        in_flight[lane] = [at for at, _ in batch]
        sockets[lane].setblocking(True)
        sockets[lane].sendall(b"".join(request for _, request in batch))
        sockets[lane].setblocking(False)
        requests += 1

    start = time.perf_counter()
    upcoming = 0
    while len(latencies) < len(arrivals):
        now = time.perf_counter() - start
        while upcoming < len(arrivals) and arrivals[upcoming][0] <= now:
            at, lane, request = arrivals[upcoming]
            upcoming += 1
            waiting[lane].append((at, request))
            if in_flight[lane] is None:
                send(lane)
        timeout = arrivals[upcoming][0] - now if upcoming < len(arrivals) else 1.0
        for key, _ in selector.select(max(0.0, timeout)):
            lane = key.data
            data = sockets[lane].recv(1 << 20)
            if not data:
                raise RuntimeError("Redis closed the connection")
            buffers[lane] += data
            replies, failed, used = replies_in(buffers[lane])
            buffers[lane] = buffers[lane][used:]
            answered[lane] += replies
            errors += failed
            sent = in_flight[lane]
            if sent is not None and answered[lane] == len(sent):
                done = time.perf_counter() - start
                latencies += [done - at for at in sent]
                answered[lane], in_flight[lane] = 0, None
                if waiting[lane]:
                    send(lane)
    selector.close()
    return latencies, requests, errors


def measure_load(
    url: str,
    layout: str,
    script: str,
    offered: float,
    seconds: float,
    front_ends: int = FRONT_ENDS,
) -> LoadRun:
    """`offered` single-event frames a second for `seconds` through `front_ends` coalescers."""
    client = redis.Redis.from_url(url)
    try:
        sha = client.script_load(script)
        calls = frame_calls(f"bench:load:{offered:g}:", max(1, round(offered * seconds)))
        keys = [call_keys[0] for call_keys, _ in calls]
        arrivals = _arrivals(_requests(sha, calls), keys, offered, front_ends, seed=len(calls))
        with _connections(url, front_ends) as sockets:
            redis_before, client_before = _redis_cpu(client), time.process_time()
            started = time.perf_counter()
            latencies, requests, errors = _play(sockets, arrivals)
            elapsed = time.perf_counter() - started
            redis_used = _redis_cpu(client) - redis_before
            client_used = time.process_time() - client_before
        client.flushdb()
    finally:
        client.close()
    return LoadRun(
        layout=layout,
        offered=offered,
        front_ends=front_ends,
        frames=len(calls),
        seconds=elapsed,
        redis_seconds=redis_used,
        client_seconds=client_used,
        requests=requests,
        errors=errors,
        latency_ms=Spread.of([latency * 1e3 for latency in latencies]),
    )


def measure_capacity(
    url: str,
    rates: Sequence[float],
    seconds: float,
    progress: Progress,
    client_core: int | None = None,
) -> list[LoadRun]:
    """Each layout at each offered rate, the client on `client_core` when given."""
    before = os.sched_getaffinity(0)
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    runs: list[LoadRun] = []
    try:
        for layout, script in ((HASH, hash_layout_script()), (PACKED, _APPLY_LUA)):
            for offered in rates:
                run = measure_load(url, layout, script, offered, seconds)
                runs.append(run)
                progress(
                    f"capacity, {layout}, {offered:,.0f} frames/s offered: {run.carried:,.0f} "
                    f"carried, Redis {run.redis_busy:.0%} of a core, "
                    f"{run.redis_us_per_frame:.1f} µs a frame, "
                    f"{run.frames_per_request:.1f} frames a request, "
                    f"p99 {run.latency_ms.p99:.1f} ms"
                )
    finally:
        os.sched_setaffinity(0, before)
    return runs
