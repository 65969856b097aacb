"""The decoder over generated hostile input: it answers every frame, and raises only FrameError."""

from __future__ import annotations

import json
import math
import random

import msgspec
import pytest

from streaming.protocol import (
    ERROR_CODES,
    MAX_PRICE,
    MAX_QUANTITY,
    AddToCart,
    Event,
    FrameError,
    ProductView,
    ProtocolError,
    Purchase,
    RemoveFromCart,
    decode_events,
    decode_frame,
)
from tests.hostile import (
    HUGE_NUMBERS,
    INVALID_UTF8,
    KINDS,
    NOT_NUMBERS,
    deep,
    hostile_frame,
    oversized_frame,
)


def outcome(data: str | bytes) -> list[Event | ProtocolError] | ProtocolError:
    """What the decoder makes of a frame: its items, or the one error of the whole frame."""
    error: ProtocolError | None = None
    try:
        items = decode_frame(data)
    except FrameError as exc:
        error = exc.error
    if error is not None:
        assert error.code in ERROR_CODES, error
        assert isinstance(error.detail, str) and error.detail
        return error
    for item in items:
        assert isinstance(item, Event | ProtocolError), item
        if isinstance(item, ProtocolError):
            assert item.code in ERROR_CODES, item
        else:
            assert_within_bounds(item)
    return items


def items_of(data: str | bytes) -> list[Event | ProtocolError]:
    """The items of a frame the decoder reads as a whole (no error of the whole frame)."""
    result = outcome(data)
    assert not isinstance(result, ProtocolError), result
    return result


def assert_within_bounds(event: Event) -> None:
    props = event.props
    if isinstance(props, AddToCart | ProductView):
        assert math.isfinite(props.price) and 0 <= props.price <= MAX_PRICE, event
    if isinstance(props, AddToCart | RemoveFromCart) and props.quantity is not None:
        assert 1 <= props.quantity <= MAX_QUANTITY, event
    if isinstance(props, Purchase) and props.total is not None:
        assert math.isfinite(props.total) and 0 <= props.total <= MAX_PRICE, event
    if event.ts is not None:
        assert 0 <= event.ts < 2**63


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_generated_frames_of_each_kind_get_an_answer_never_an_exception(kind):
    rng = random.Random(f"hostile-{kind}")
    for _ in range(400):
        frame = KINDS[kind](rng)
        outcome(frame)
        # The same frame as the other kind of WebSocket message.
        if isinstance(frame, bytes):
            outcome(frame.decode("utf-8", "replace"))
        else:
            outcome(frame.encode("utf-8", "surrogatepass"))


def test_thousands_of_mixed_frames_get_an_answer_never_an_exception():
    rng = random.Random(13)
    answers = {"frame_error": 0, "items": 0}
    for _ in range(5000):
        result = outcome(hostile_frame(rng, oversized=0.01))
        answers["frame_error" if isinstance(result, ProtocolError) else "items"] += 1
    assert answers["frame_error"] > 1000 and answers["items"] > 500


@pytest.mark.parametrize("bad", INVALID_UTF8)
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (b'{"type":"track","id":"e-%s","event":"heartbeat"}', "frame"),
        (b'{"type":"track","id":"e-1","event":"he%s"}', "frame"),
        (b'{"type":"track","id":"e-1","event":"search","props":{"query":"q%s"}}', "event"),
        (b'{"type":"track","id":"e-1","event":"search","props":{"q%s":"q"}}', "event"),
        (b'{"type":"batch","events":[{"id":"e-%s","event":"heartbeat"}]}', "event"),
        (
            b'{"type":"batch","events":[{"id":"e-1","event":"search","props":{"query":"%s"}}]}',
            "event",
        ),
    ],
)
def test_invalid_utf8_in_a_binary_frame_is_bad_json(bad, template, expected):
    result = outcome(template.replace(b"%s", bad))
    assert isinstance(result, ProtocolError) is (expected == "frame"), result
    error = result if isinstance(result, ProtocolError) else result[0]
    assert isinstance(error, ProtocolError)
    assert error.code == "bad_json" and "UTF-8" in error.detail


def test_lone_surrogates_in_a_text_frame_are_bad_json():
    result = outcome('{"type":"track","id":"e-\ud800","event":"heartbeat"}')
    assert isinstance(result, ProtocolError) and result.code == "bad_json"


@pytest.mark.parametrize("depth", [900, 1000, 1001, 5000, 15_000])
@pytest.mark.parametrize(
    "template",
    [
        "%s",
        '{"type":"track","id":"e-1","event":"search","props":%s}',
        '{"type":"track","id":"e-1","event":"search","props":{"query":%s}}',
        '{"type":"batch","events":[%s]}',
        '{"type":"batch","events":[{"id":"e-1","event":"search","props":%s}]}',
        '{"type":"track","id":"e-1","event":"heartbeat","extra":%s}',
    ],
)
@pytest.mark.parametrize(("opener", "closer"), [("[", "]"), ('{"a":', "}")])
def test_deep_nesting_is_an_error_not_a_recursion_error(depth, template, opener, closer):
    nested = opener * depth + "1" + closer * depth
    for data in (template % nested, (template % nested).encode()):
        result = outcome(data)
        error = result if isinstance(result, ProtocolError) else result[0]
        assert isinstance(error, ProtocolError), error
        assert error.code in {"bad_json", "bad_frame", "invalid_props"}


def test_deep_nesting_generated_anywhere_never_escapes():
    rng = random.Random(5)
    for _ in range(300):
        outcome(deep(rng))


# 1000 is a fine price, and 1e-401 one that rounds to zero.
PAST_BOUNDS = [("price", n) for n in HUGE_NUMBERS if n not in {"1000", "0.1e-400"}] + [
    ("quantity", n) for n in HUGE_NUMBERS
]


@pytest.mark.parametrize(("field", "number"), PAST_BOUNDS)
def test_numbers_past_their_bounds_are_invalid_props(field, number):
    props = '{"product_id":"a","price":%s,"quantity":%s}' % (
        (number, "1") if field == "price" else ("1", number)
    )
    (error,) = items_of('{"type":"track","id":"e-1","event":"add_to_cart","props":' + props + "}")
    assert isinstance(error, ProtocolError) and error.code == "invalid_props", error
    assert error.id == "e-1" and f"props.{field}" in error.detail


@pytest.mark.parametrize("number", NOT_NUMBERS)
def test_nan_and_infinity_are_not_json(number):
    frame = (
        '{"type":"track","id":"e-1","event":"add_to_cart","props":{"product_id":"a","price":%s}}'
    )
    result = outcome(frame % number)
    assert isinstance(result, ProtocolError) and result.code == "bad_json"


@pytest.mark.parametrize(
    ("price", "quantity", "ok"),
    [
        (MAX_PRICE, MAX_QUANTITY, True),
        (0, 1, True),
        (MAX_PRICE + 0.01, 1, False),
        (-0.01, 1, False),
        (1, MAX_QUANTITY + 1, False),
        (1, 0, False),
        (1, 1.5, False),
        (1, True, False),
        ("1", 1, False),
    ],
)
def test_prices_and_quantities_are_bounded(price, quantity, ok):
    frame = {
        "type": "track",
        "id": "e-1",
        "event": "add_to_cart",
        "props": {"product_id": "a", "price": price, "quantity": quantity},
    }
    (item,) = items_of(json.dumps(frame))
    assert isinstance(item, Event) is ok, item
    if not ok:
        assert isinstance(item, ProtocolError) and item.code == "invalid_props"


def test_client_time_is_bounded():
    frame = {"type": "track", "id": "e-1", "event": "heartbeat", "ts": 10**16}
    result = outcome(json.dumps(frame))
    assert isinstance(result, ProtocolError) and result.code == "bad_frame" and result.id == "e-1"
    frame["ts"] = 1_764_000_000_000
    (item,) = items_of(json.dumps(frame))
    assert isinstance(item, Event) and item.ts == 1_764_000_000_000


@pytest.mark.parametrize(
    ("name", "props"),
    [
        ("offer_shown", {"offer_id": "o-\x00"}),
        ("offer_accepted", {"offer_id": "o\n1"}),
        ("purchase", {"order_id": "A\x00"}),
        ("purchase", {"code": "SAVE\x00"}),
        ("search", {"query": "q\x00"}),
        ("page_view", {"url": "/\x00"}),
        ("add_to_cart", {"product_id": "sku\x00", "price": 1}),
    ],
)
def test_strings_that_reach_the_record_hold_no_nul_or_control_characters(name, props):
    (item,) = items_of(json.dumps({"type": "track", "id": "e-1", "event": name, "props": props}))
    assert isinstance(item, ProtocolError) and item.code == "invalid_props", item


def test_a_purchase_may_name_the_offer_code_it_used():
    frame = {"type": "track", "id": "e-1", "event": "purchase", "props": {"code": "SAVE10-ABC"}}
    (item,) = items_of(json.dumps(frame))
    assert isinstance(item, Event) and item.props.code == "SAVE10-ABC"


@pytest.mark.parametrize("count", [101, 150, 1000])
def test_an_oversized_batch_is_one_bad_frame(count):
    events = [{"id": f"b-{i}", "event": "heartbeat"} for i in range(count)]
    result = outcome(json.dumps({"type": "batch", "events": events}))
    assert isinstance(result, ProtocolError) and result.code == "bad_frame"


def test_a_frame_over_16_kib_is_still_only_an_answer_to_the_decoder():
    rng = random.Random(1)
    for _ in range(20):
        outcome(oversized_frame(rng))


def test_collect_events_from_generated_garbage_are_errors_never_exceptions():
    rng = random.Random(21)
    decoder = msgspec.json.Decoder(list[msgspec.Raw])
    checked = 0
    for _ in range(2000):
        frame = hostile_frame(rng)
        data = frame if isinstance(frame, bytes) else frame.encode("utf-8", "surrogatepass")
        try:
            items = decoder.decode(b"[" + data + b"]")
        except (msgspec.DecodeError, UnicodeError, RecursionError):
            continue  # the view answers these 400 before any event is read
        for item in decode_events(items):
            assert isinstance(item, Event | ProtocolError)
            if isinstance(item, Event):
                assert_within_bounds(item)
        checked += 1
    assert checked > 500
