"""A recorded clickstream replayed through a live server, at the pace it was recorded.

Every session gets a collector socket of its own and sends its events at their real offsets from
the session's first event, all sessions starting together. The server sees them as it would see
those shoppers: its clock stamps the events, its detector finds the pauses where the real gaps
are, its worker scores and decides them. Each socket stays open until the session's last event
plus the pause and a margin, so a session that ends with a full cart pauses too. Offers that come
back are left unanswered: the recorded shopper never saw them.

`replay_live` returns, per session, the server's session id and the wall-clock moment its first
event went out, so the decisions the server records map back onto the recording's own time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from benchmarks.clients.simulate import collector_url, open_socket
from streaming.clickstream import ClickSession

MARGIN = 5.0  # seconds a socket stays open past the last event's pause
STAGGER = 0.02  # seconds between two sessions' first events, not to open every socket at once


@dataclass
class Replayed:
    """One session as the server saw it."""

    session: ClickSession
    server_session: str
    started: float  # wall clock (time.time()) when its first event was sent
    sent: int = 0
    acked: int = 0
    refused: list[str] = field(default_factory=list)

    def recorded_time(self, wall: float) -> float:
        """A moment of the run on the recording's clock."""
        return wall - self.started + self.session.events[0][0]

    def as_sent(self) -> ClickSession:
        """The session on the run's clock: each event at the moment it was due to be sent."""
        first = self.session.events[0][0]
        moved = [(at - first + self.started, event) for at, event in self.session.events]
        return dataclasses.replace(self.session, events=moved)


def frame_of(event: msgspec.Struct) -> str:
    """The `track` frame that carries a validated event."""
    fields = {k: v for k, v in msgspec.to_builtins(event).items() if v is not None}
    if isinstance(fields.get("props"), dict):  # unset props stay unset, as a browser sends them
        fields["props"] = {k: v for k, v in fields["props"].items() if v is not None}
    return json.dumps({"type": "track", **fields})


async def replay_session(
    session: ClickSession, url: str, *, delay: float, pause_seconds: float, margin: float = MARGIN
) -> Replayed:
    await asyncio.sleep(delay)
    ws, welcome = await open_socket(url, None)
    loop = asyncio.get_running_loop()
    first = session.events[0][0]
    start = loop.time()
    replayed = Replayed(session, str(welcome["session"]), time.time())

    async def read() -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                frame = json.loads(message)
                if frame.get("type") == "ack":
                    replayed.acked += len(frame.get("ids", ()))
                elif frame.get("type") == "error":
                    replayed.refused.append(f"{frame.get('code')}: {frame.get('detail')}")

    reader = asyncio.create_task(read())
    try:
        for at, event in session.events:
            await asyncio.sleep(max(0.0, start + (at - first) - loop.time()))
            await ws.send(frame_of(event))
            replayed.sent += 1
        last = session.events[-1][0] - first
        await asyncio.sleep(max(0.0, start + last + pause_seconds + margin - loop.time()))
    finally:
        await ws.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return replayed


async def replay_live(
    sessions: Sequence[ClickSession],
    url: str,
    *,
    site: str,
    pause_seconds: float,
    progress: Callable[[str], None],
    margin: float = MARGIN,
) -> list[Replayed]:
    """Every session through the collector at `url`, all at once, each at its recorded pace."""
    address = collector_url(url, site)
    longest = max(s.events[-1][0] - s.events[0][0] for s in sessions)
    progress(
        f"replaying {len(sessions)} sessions through {address} at their recorded pace: "
        f"{(longest + pause_seconds + margin) / 60:.1f} minutes"
    )
    tasks = [
        asyncio.create_task(
            replay_session(
                s, address, delay=i * STAGGER, pause_seconds=pause_seconds, margin=margin
            )
        )
        for i, s in enumerate(sessions)
    ]
    started = time.monotonic()
    pending: set[asyncio.Task[Replayed]] = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=60)
        progress(
            f"  {len(tasks) - len(pending)}/{len(tasks)} sessions done after "
            f"{(time.monotonic() - started) / 60:.0f} min"
        )
    return [task.result() for task in tasks]
