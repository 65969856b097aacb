"""Builders for test data, going through the real decoder."""

from __future__ import annotations

import msgspec

from streaming.protocol import Event, decode_frame

T0 = 1_764_000_000.0


def event(event_id: str, name: str, **props: object) -> Event:
    frame = msgspec.json.encode({"type": "track", "id": event_id, "event": name, "props": props})
    (item,) = decode_frame(frame)
    assert isinstance(item, Event), item
    return item


def track(event_id: str, name: str, **props: object) -> dict[str, object]:
    return {"type": "track", "id": event_id, "event": name, "props": props}
