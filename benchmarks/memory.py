"""Memory per live session: a `MemoryStore` holding many shoppers' realistic runs of events.

Each session gets its own freshly decoded events, as the collector would, so the strings a
session keeps (its id, its cart's product ids) are its own and counted; the decoded frames
themselves are dropped before measuring, since the collector does not hold on to them either.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from dataclasses import dataclass

import msgspec

from offers.tokens import new_session_id
from streaming.protocol import Event, decode_frame
from streaming.store import MemoryStore

GIB = 1024**3
CATALOG = 500


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    sessions: int
    events_per_session: int
    bytes_per_session: float

    @property
    def sessions_per_gib(self) -> int:
        return int(GIB / self.bytes_per_session)


def _track(event_id: str, name: str, **props: object) -> dict[str, object]:
    return {"type": "track", "id": event_id, "event": name, "props": props}


def shopper_frames(number: int) -> list[bytes]:
    """One shopper's visit as encoded frames: browse, search, views, a cart of 1 to 3 lines.

    `number` varies the products and the cart's size, so sessions are not all alike.
    """
    sku = [f"sku-{(number * 7 + step) % CATALOG}" for step in range(4)]
    lines = 1 + number % 3
    opening = {
        "type": "batch",
        "events": [
            {"id": "e-1", "event": "page_view", "props": {"url": "/", "page_type": "home"}},
            {"id": "e-2", "event": "search", "props": {"query": "espresso machine"}},
            {
                "id": "e-3",
                "event": "page_view",
                "props": {"url": "/search?q=espresso+machine", "page_type": "search"},
            },
        ],
    }
    rest = [
        _track("e-4", "product_view", product_id=sku[0], price=249.0, category="Kitchen"),
        _track("e-5", "page_view", url=f"/products/{sku[0]}", page_type="product"),
        _track("e-6", "product_view", product_id=sku[1], price=129.0),
        _track("e-7", "add_to_cart", product_id=sku[0], price=249.0, quantity=1),
        _track("e-8", "product_view", product_id=sku[2], price=69.0),
        _track("e-9", "visibility", state="hidden"),
        _track("e-10", "visibility", state="visible"),
        _track("e-11", "product_view", product_id=sku[3], price=14.0),
        _track("e-12", "heartbeat"),
    ]
    for line in range(1, lines):
        rest.append(_track(f"e-c{line}", "add_to_cart", product_id=sku[line * 2 - 1], price=19.99))
    rest += [
        _track("e-13", "page_view", url="/cart", page_type="cart"),
        _track("e-14", "product_view", product_id=sku[1], price=129.0),
        _track("e-15", "heartbeat"),
        _track("e-16", "heartbeat"),
    ]
    return [msgspec.json.encode(frame) for frame in (opening, *rest)]


async def _fill(store: MemoryStore, runs: list[list[bytes]], sessions: int) -> int:
    """Apply a run of events to each of `sessions` new sessions; returns events applied."""
    applied = 0
    for number in range(sessions):
        session_id, now = new_session_id(), 1_764_000_000.0 + number
        await store.open(session_id=session_id, site="demo", now=now)
        for step, frame in enumerate(runs[number % len(runs)]):
            items = decode_frame(frame)
            events = [item for item in items if isinstance(item, Event)]
            if len(events) != len(items):
                raise ValueError(f"the benchmark's own frame is refused: {items}")
            result = await store.apply(
                session_id=session_id, site="demo", events=events, now=now + step
            )
            if result.errors:
                raise ValueError(f"the benchmark's own events are refused: {result.errors}")
            applied += len(result.acked)
    return applied


def measure_memory(sessions: int) -> MemoryFigures:
    """Traced Python memory the store holds per session, with `sessions` sessions held."""
    runs = [shopper_frames(number) for number in range(64)]
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        store = MemoryStore()
        applied = asyncio.run(_fill(store, runs, sessions))
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    if len(store) != sessions:
        raise RuntimeError(f"the store holds {len(store)} sessions, not {sessions}")
    return MemoryFigures(
        sessions=sessions,
        events_per_session=round(applied / sessions),
        bytes_per_session=(after - before) / sessions,
    )
