from __future__ import annotations

import json

import pytest

from streaming.protocol import (
    EVENT_KINDS,
    MAX_BATCH_EVENTS,
    AddToCart,
    Event,
    FrameError,
    ProtocolError,
    decode_events,
    decode_frame,
)

VALID_PROPS: dict[str, dict[str, object]] = {
    "page_view": {"url": "/cart", "page_type": "cart"},
    "product_view": {"product_id": "sku-1", "price": 19.99, "category": "shoes"},
    "search": {"query": "red shoes"},
    "add_to_cart": {"product_id": "sku-1", "price": 19.99, "quantity": 2},
    "remove_from_cart": {"product_id": "sku-1"},
    "checkout_start": {},
    "purchase": {"order_id": "o-1", "total": 39.98},
    "visibility": {"state": "hidden"},
    "heartbeat": {},
    "offer_shown": {"offer_id": "o-abc"},
    "offer_accepted": {"offer_id": "o-abc"},
    "offer_dismissed": {"offer_id": "o-abc"},
}


def one(frame: object) -> Event | ProtocolError:
    (item,) = decode_frame(json.dumps(frame))
    return item


def test_the_table_covers_every_event_kind():
    assert set(VALID_PROPS) == set(EVENT_KINDS)


@pytest.mark.parametrize("name", sorted(VALID_PROPS))
def test_it_accepts_each_event_with_its_props(name):
    item = one({"type": "track", "id": "e-1", "event": name, "props": VALID_PROPS[name]})
    assert isinstance(item, Event)
    assert (item.id, item.name) == ("e-1", name)


def test_props_may_be_left_out_where_none_are_required():
    item = one({"type": "track", "id": "e-1", "event": "checkout_start", "ts": 1764000000000})
    assert isinstance(item, Event)


def test_quantity_defaults_to_one():
    item = one(
        {
            "type": "track",
            "id": "e",
            "event": "add_to_cart",
            "props": {"product_id": "a", "price": 1},
        }
    )
    assert isinstance(item, Event) and isinstance(item.props, AddToCart)
    assert item.props.quantity == 1


@pytest.mark.parametrize(
    ("name", "props", "where"),
    [
        ("add_to_cart", {"product_id": "a", "price": -1}, "props.price"),
        ("add_to_cart", {"product_id": "a", "price": 10_000_001}, "props.price"),
        ("add_to_cart", {"product_id": "a", "price": "1"}, "props.price"),
        ("add_to_cart", {"product_id": "a", "price": 1, "quantity": 0}, "props.quantity"),
        ("add_to_cart", {"product_id": "a", "price": 1, "quantity": 1000}, "props.quantity"),
        ("add_to_cart", {"product_id": "a", "price": 1, "quantity": 1.5}, "props.quantity"),
        ("add_to_cart", {"product_id": "a", "price": 1, "quantity": True}, "props.quantity"),
        ("add_to_cart", {"product_id": "", "price": 1}, "props.product_id"),
        ("add_to_cart", {"product_id": "a" * 129, "price": 1}, "props.product_id"),
        ("add_to_cart", {"price": 1}, "props"),
        ("add_to_cart", {"product_id": "a", "price": 1, "colour": "red"}, "props"),
        ("page_view", {"url": "/" * 2049}, "props.url"),
        ("page_view", {"url": "/", "page_type": "landing"}, "props.page_type"),
        ("search", {"query": "q" * 257}, "props.query"),
        ("visibility", {"state": "gone"}, "props.state"),
        ("heartbeat", {"beat": 1}, "props"),
        ("purchase", {"total": -5}, "props.total"),
        ("offer_shown", {}, "props"),
    ],
)
def test_it_refuses_props_outside_the_table(name, props, where):
    item = one({"type": "track", "id": "e-9", "event": name, "props": props})
    assert isinstance(item, ProtocolError)
    assert item.code == "invalid_props"
    assert item.id == "e-9"
    assert f"`{where}" in item.detail


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_prices_are_refused(number):
    raw = '{"type":"track","id":"e","event":"product_view","props":{"product_id":"a","price":%s}}'
    if number == "1e999":  # valid JSON that overflows to infinity
        (item,) = decode_frame(raw % number)
        assert isinstance(item, ProtocolError) and item.code == "invalid_props"
    else:  # not JSON at all
        with pytest.raises(FrameError) as info:
            decode_frame(raw % number)
        assert info.value.error.code == "bad_json"


def test_an_unknown_event_is_named_in_the_error():
    item = one({"type": "track", "id": "e-1", "event": "teleport", "props": {}})
    assert isinstance(item, ProtocolError)
    assert (item.code, item.id) == ("unknown_event", "e-1")
    assert "teleport" in item.detail


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "shout"},
        {"type": "track", "event": "heartbeat"},
        {"type": "track", "id": "", "event": "heartbeat"},
        {"type": "track", "id": "x" * 65, "event": "heartbeat"},
        {"type": "track", "id": 7, "event": "heartbeat"},
        {"type": "track", "id": "e", "event": "heartbeat", "ts": -1},
        {"type": "track", "id": "e", "event": "heartbeat", "extra": 1},
        {"type": "batch", "events": {}},
        [1, 2],
    ],
)
def test_malformed_frames_are_bad_frames(frame):
    with pytest.raises(FrameError) as info:
        decode_frame(json.dumps(frame))
    assert info.value.error.code == "bad_frame"


def test_bad_frame_errors_carry_the_id_when_there_is_one():
    with pytest.raises(FrameError) as info:
        decode_frame(json.dumps({"type": "track", "id": "e-5", "event": "heartbeat", "ts": "now"}))
    assert info.value.error.id == "e-5"


@pytest.mark.parametrize("data", ["", "nope", "{", '{"type": "track",}', b"\xff\xfe"])
def test_unparseable_frames_are_bad_json(data):
    with pytest.raises(FrameError) as info:
        decode_frame(data)
    assert info.value.error.code == "bad_json"


def test_a_batch_keeps_good_events_and_refuses_bad_ones_in_order():
    items = decode_frame(
        json.dumps(
            {
                "type": "batch",
                "events": [
                    {"id": "a", "event": "search", "props": {"query": "x"}},
                    {"id": "b", "event": "search", "props": {"query": 5}},
                    {"event": "search"},
                    {"id": "d", "event": "heartbeat"},
                ],
            }
        )
    )
    assert [isinstance(i, Event) for i in items] == [True, False, False, True]
    assert isinstance(items[1], ProtocolError) and isinstance(items[2], ProtocolError)
    assert items[1].code == "invalid_props" and items[1].id == "b"
    assert items[2].code == "bad_frame" and "events[2]" in items[2].detail


def test_a_valid_batch_decodes_to_typed_events():
    events = [
        {"id": "a", "event": "add_to_cart", "props": {"product_id": "p", "price": 2}},
        {"id": "b", "event": "heartbeat"},
        {"id": "c", "event": "checkout_start", "props": {}},
    ]
    items = decode_frame(json.dumps({"type": "batch", "events": events}))
    assert [(e.id, e.name, e.activity) for e in items if isinstance(e, Event)] == [
        ("a", "add_to_cart", True),
        ("b", "heartbeat", False),
        ("c", "checkout_start", True),
    ]
    assert isinstance(items[0], Event) and isinstance(items[0].props, AddToCart)
    assert items[0].props.quantity == 1


def test_a_batch_holds_at_most_a_hundred_events():
    events = [{"id": f"e{i}", "event": "heartbeat"} for i in range(MAX_BATCH_EVENTS)]
    assert len(decode_frame(json.dumps({"type": "batch", "events": events}))) == MAX_BATCH_EVENTS
    events.append({"id": "one-more", "event": "heartbeat"})
    with pytest.raises(FrameError) as info:
        decode_frame(json.dumps({"type": "batch", "events": events}))
    assert info.value.error.code == "bad_frame"


def test_http_collect_events_follow_the_batch_rules():
    import msgspec

    raws = [
        msgspec.Raw(json.dumps(e).encode())
        for e in ({"id": "a", "event": "heartbeat"}, {"id": "b", "event": "nope"})
    ]
    items = decode_events(raws)
    assert isinstance(items[0], Event)
    assert isinstance(items[1], ProtocolError) and items[1].code == "unknown_event"
