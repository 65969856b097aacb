"""Generated hostile input for the collector: what an anonymous client on the internet may send.

Seeded, so a failure names the frame that caused it and replays. Every kind of frame is made by
one small function taking a `random.Random`; `hostile_frame` picks one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from streaming.protocol import EVENT_KINDS, MAX_BATCH_EVENTS, MAX_FRAME_BYTES

Frame = str | bytes

NAMES = sorted(EVENT_KINDS)
HONEST_PROPS: dict[str, dict[str, object]] = {
    "page_view": {"url": "/cart", "page_type": "cart"},
    "product_view": {"product_id": "sku-1", "price": 19.99, "category": "shoes"},
    "search": {"query": "red shoes"},
    "add_to_cart": {"product_id": "sku-1", "price": 19.99, "quantity": 2},
    "remove_from_cart": {"product_id": "sku-1"},
    "checkout_start": {},
    "purchase": {"order_id": "A-1", "total": 39.98, "code": "SAVE10-X"},
    "visibility": {"state": "hidden"},
    "heartbeat": {},
    "offer_shown": {"offer_id": "o-abc"},
    "offer_accepted": {"offer_id": "o-abc"},
    "offer_dismissed": {"offer_id": "o-abc"},
}

# Numbers past every bound, and JSON that is no number at all.
HUGE_NUMBERS = (
    "1e309",
    "-1e309",
    "1e999999",
    "9" * 400,
    "9" * 5000,
    "-" + "9" * 400,
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "10000000.01",
    "1000",
    "0.1e-400",
    "1" + "0" * 300 + ".5",
)
NOT_NUMBERS = ("NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "0x10", "1e", "--1", ".5")
WRONG_TYPES = ('"1"', "true", "null", "[]", "{}", "[1, 2]", '{"a": 1}', '""', "1.5", "-1")
INVALID_UTF8 = (
    b"\xff",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\x80",
)
BAD_ESCAPES = ("\\ud800", "\\udfff", "\\ud800\\u0041", "\\u00", "\\x41", "\\", "\\u0000")


def _event(rng: random.Random, name: str | None = None) -> dict[str, object]:
    name = name or rng.choice(NAMES)
    return {"id": f"h-{rng.randrange(10**9)}", "event": name, "props": dict(HONEST_PROPS[name])}


def honest(rng: random.Random) -> Frame:
    if rng.random() < 0.5:
        return json.dumps({"type": "track", **_event(rng)})
    events = [_event(rng) for _ in range(rng.randrange(0, 6))]
    return json.dumps({"type": "batch", "events": events})


def random_bytes(rng: random.Random) -> Frame:
    return rng.randbytes(rng.randrange(0, 300))


def random_text(rng: random.Random) -> Frame:
    alphabet = '{}[]":,0123456789.eE+-ntrufalsbatchype\\ \t\n\u00e9\u4e2d'
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))


def mangled(rng: random.Random) -> Frame:
    """An honest frame cut short, or with bytes flipped, dropped or repeated."""
    data = bytearray(str(honest(rng)).encode())
    for _ in range(rng.randrange(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        operation = rng.randrange(4)
        if operation == 0:
            data[at] = rng.randrange(256)
        elif operation == 1:
            del data[at:]
        elif operation == 2:
            del data[at]
        else:
            data[at:at] = data[at : at + rng.randrange(1, 20)]
    return bytes(data)


def invalid_utf8(rng: random.Random) -> Frame:
    """Bytes that are not UTF-8 inside a string: the id, the event, a prop or a prop's name."""
    bad = rng.choice(INVALID_UTF8)
    name = rng.choice(["search", "add_to_cart", "offer_shown", "page_view"])
    where = rng.randrange(5)
    event = _event(rng, name)
    marker = "@@BAD@@"
    if where == 0:
        event["id"] = marker
    elif where == 1:
        event["event"] = marker
    elif where == 2:
        props = event["props"]
        assert isinstance(props, dict)
        key = next(iter(props))
        props[key] = marker
    elif where == 3:
        event["props"] = {marker: 1}
    else:
        event["ts"] = marker
    frame = (
        {"type": "track", **event}
        if rng.random() < 0.5
        else {"type": "batch", "events": [_event(rng), event]}
    )
    return json.dumps(frame).encode().replace(marker.encode(), b"ok" + bad + b"ok")


def bad_escape(rng: random.Random) -> Frame:
    escape = rng.choice(BAD_ESCAPES)
    field = rng.choice(["id", "event", "query"])
    values = {"id": "e-1", "event": "search", "query": "q"}
    values[field] = escape
    quoted = {name: f'"{value}"' for name, value in values.items()}
    return (
        ('{"type":"track","id":' + quoted["id"] + ',"event":' + quoted["event"])
        + ',"props":{"query":'
        + quoted["query"]
        + "}}"
    )


def deep(rng: random.Random) -> Frame:
    """Nesting deeper than any frame needs, in every place a value can go; closed or not."""
    depth = rng.choice([64, 500, 999, 1000, 1001, 3000, 15_000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    closed = rng.random() < 0.7
    nested = opener * depth + "1" + (closer * depth if closed else "")
    templates = [
        "%s",
        '{"type":"track","id":"e-1","event":"search","props":%s}',
        '{"type":"track","id":"e-1","event":"search","props":{"query":%s}}',
        '{"type":"track","id":%s,"event":"heartbeat"}',
        '{"type":"track","id":"e-1","event":"heartbeat","ts":%s}',
        '{"type":"batch","events":[%s]}',
        '{"type":"batch","events":[{"id":"e-1","event":"search","props":%s}]}',
        '{"type":"batch","events":%s}',
        '{"type":%s}',
        '{"type":"track","id":"e-1","event":"heartbeat","extra":%s}',
    ]
    frame = rng.choice(templates) % nested
    return frame.encode() if rng.random() < 0.5 else frame


def huge_number(rng: random.Random) -> Frame:
    number = rng.choice(HUGE_NUMBERS + NOT_NUMBERS)
    templates = [
        '{"type":"track","id":"e-1","event":"add_to_cart","props":{"product_id":"a","price":%s}}',
        '{"type":"track","id":"e-1","event":"add_to_cart","props":{"product_id":"a","price":1,"quantity":%s}}',
        '{"type":"track","id":"e-1","event":"remove_from_cart","props":{"product_id":"a","quantity":%s}}',
        '{"type":"track","id":"e-1","event":"product_view","props":{"product_id":"a","price":%s}}',
        '{"type":"track","id":"e-1","event":"purchase","props":{"total":%s}}',
        '{"type":"track","id":"e-1","event":"heartbeat","ts":%s}',
        '{"type":"batch","events":[{"id":"e-1","event":"add_to_cart","props":{"product_id":"a","price":%s}}]}',
        '{"type":"track","id":%s,"event":"heartbeat"}',
    ]
    return rng.choice(templates) % number


def wrong_type(rng: random.Random) -> Frame:
    value = rng.choice(WRONG_TYPES)
    templates = [
        '{"type":%s,"id":"e-1","event":"heartbeat"}',
        '{"type":"track","id":%s,"event":"heartbeat"}',
        '{"type":"track","id":"e-1","event":%s}',
        '{"type":"track","id":"e-1","event":"search","props":%s}',
        '{"type":"track","id":"e-1","event":"search","props":{"query":%s}}',
        '{"type":"track","id":"e-1","event":"add_to_cart","props":{"product_id":%s,"price":1}}',
        '{"type":"track","id":"e-1","event":"visibility","props":{"state":%s}}',
        '{"type":"track","id":"e-1","event":"offer_shown","props":{"offer_id":%s}}',
        '{"type":"batch","events":%s}',
        '{"type":"batch","events":[%s]}',
        "%s",
    ]
    return rng.choice(templates) % value


def out_of_table(rng: random.Random) -> Frame:
    """Valid JSON the table refuses: unknown events, fields and values, control characters."""
    event = _event(rng)
    choice = rng.randrange(6)
    if choice == 0:
        event["event"] = rng.choice(["teleport", "", "ADD_TO_CART", "x" * 5000])
    elif choice == 1:
        event["sneaky"] = True
    elif choice == 2:
        event["props"] = {**HONEST_PROPS["search"], "sort": "price"}
    elif choice == 3:
        event["id"] = rng.choice(["", "x" * 65, "x" * 10_000])
    elif choice == 4:
        event = _event(rng, "offer_shown")
        event["props"] = {"offer_id": rng.choice(["o-\x00", "\x00", "o\n1", "\x7f"])}
    else:
        event = _event(rng, "page_view")
        event["props"] = {"url": "/" + "a" * rng.choice([2048, 3000]) + "\x00"}
    return json.dumps({"type": "track", **event})


def oversized_batch(rng: random.Random) -> Frame:
    count = rng.choice([MAX_BATCH_EVENTS + 1, 150, 400])
    events = [{"id": f"b-{i}", "event": "heartbeat"} for i in range(count)]
    return json.dumps({"type": "batch", "events": events}, separators=(",", ":"))


def oversized_frame(rng: random.Random) -> Frame:
    """Over 16 KiB: the socket closes with 1009 (the decoder itself reads it like any frame)."""
    frame = json.dumps({"type": "track", **_event(rng, "search")})
    padding = " " * (MAX_FRAME_BYTES + rng.randrange(1, 5000) - len(frame))
    return frame + padding if rng.random() < 0.5 else (frame + padding).encode()


KINDS: dict[str, Callable[[random.Random], Frame]] = {
    "honest": honest,
    "random_bytes": random_bytes,
    "random_text": random_text,
    "mangled": mangled,
    "invalid_utf8": invalid_utf8,
    "bad_escape": bad_escape,
    "deep": deep,
    "huge_number": huge_number,
    "wrong_type": wrong_type,
    "out_of_table": out_of_table,
    "oversized_batch": oversized_batch,
}


def hostile_frame(rng: random.Random, *, oversized: float = 0.0) -> Frame:
    """One generated frame of any kind; with probability `oversized`, one over 16 KiB."""
    if rng.random() < oversized:
        return oversized_frame(rng)
    return KINDS[rng.choice(sorted(KINDS))](rng)


def hostile_bodies(rng: random.Random, count: int) -> list[bytes]:
    """`POST /collect/` bodies that must all be refused with a 4xx, whatever the site."""
    bodies: list[bytes] = []
    while len(bodies) < count:
        frame = hostile_frame(rng)
        data = frame if isinstance(frame, bytes) else frame.encode("utf-8", "surrogatepass")
        bodies.append(data)
        # The same garbage where the body's own fields go.
        bodies.append(
            b'{"site":"demo","token":"forged","events":[' + data + b"]}"
            if rng.random() < 0.5
            else b'{"site":' + data + b',"token":"t","events":[]}'
        )
    return bodies[:count]
