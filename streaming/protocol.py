"""The collector protocol: frames decoded and validated in one step with msgspec.

Each event kind names the struct its props must match; anything the table does not allow is
refused with a clear error, and the error says which event it belongs to. Whatever a client
sends, text or bytes, decoding raises nothing but FrameError: invalid UTF-8, nesting too deep
for the decoder and numbers past their bounds are errors of the frame or of its event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal, Union, cast

import msgspec
from msgspec import Meta, Raw, Struct

MAX_FRAME_BYTES: Final = 16 * 1024
MAX_BATCH_EVENTS: Final = 100

# Bounds on every number a shopper sends. With the cart's own bounds (streaming.state: at most
# MAX_CART_LINES lines of at most MAX_QUANTITY each) they bound every value derived from them:
# a cart is worth at most 50 x 999 x 10,000,000 = 499,500,000,000.00, which the columns that
# store it hold (offers.models.Decision.cart_value).
MAX_PRICE: Final = 10_000_000
MAX_QUANTITY: Final = 999
# Client clocks in ms, up to the last moment of the year 9999.
MAX_CLIENT_TIME: Final = 253_402_300_799_999

# Strings that reach the database: PostgreSQL text holds no NUL, and ids hold no control chars.
_NO_NUL: Final = "^[^\x00]*$"
_NO_CONTROL: Final = "^[^\x00-\x1f\x7f]*$"

EventId = Annotated[str, Meta(min_length=1, max_length=64)]
ClientTime = Annotated[int, Meta(ge=0, le=MAX_CLIENT_TIME)]
Ref = Annotated[str, Meta(min_length=1, max_length=128, pattern=_NO_CONTROL)]
Price = Annotated[float, Meta(ge=0, le=MAX_PRICE)]
Quantity = Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
PageType = Literal["home", "category", "product", "search", "cart", "checkout", "info", "other"]


class _Props(Struct, forbid_unknown_fields=True, gc=False):
    pass


class PageView(_Props):
    url: Annotated[str, Meta(max_length=2048, pattern=_NO_NUL)]
    page_type: PageType | None = None


class ProductView(_Props):
    product_id: Ref
    price: Price
    category: Annotated[str, Meta(max_length=128, pattern=_NO_NUL)] | None = None


class Search(_Props):
    query: Annotated[str, Meta(max_length=256, pattern=_NO_NUL)]


class AddToCart(_Props):
    product_id: Ref
    price: Price
    quantity: Quantity = 1


class RemoveFromCart(_Props):
    product_id: Ref
    quantity: Quantity | None = None


class NoProps(_Props):
    pass


class Purchase(_Props):
    order_id: Ref | None = None
    total: Price | None = None
    # The offer code the shopper used, if any.
    code: Annotated[str, Meta(max_length=40, pattern=_NO_CONTROL)] | None = None


class Visibility(_Props):
    state: Literal["hidden", "visible"]


class OfferRef(_Props):
    offer_id: Annotated[str, Meta(min_length=1, max_length=64, pattern=_NO_CONTROL)]


@dataclass(frozen=True, slots=True)
class EventKind:
    props: type[_Props]
    activity: bool


# The one table of events: names, props and whether they count as shopper activity.
EVENT_KINDS: Final[dict[str, EventKind]] = {
    "page_view": EventKind(PageView, activity=True),
    "product_view": EventKind(ProductView, activity=True),
    "search": EventKind(Search, activity=True),
    "add_to_cart": EventKind(AddToCart, activity=True),
    "remove_from_cart": EventKind(RemoveFromCart, activity=True),
    "checkout_start": EventKind(NoProps, activity=True),
    "purchase": EventKind(Purchase, activity=True),
    "visibility": EventKind(Visibility, activity=False),
    "heartbeat": EventKind(NoProps, activity=False),
    "offer_shown": EventKind(OfferRef, activity=False),
    "offer_accepted": EventKind(OfferRef, activity=False),
    "offer_dismissed": EventKind(OfferRef, activity=False),
}

# Events that name one of the session's offers.
OFFER_EVENTS: Final = frozenset(
    name for name, kind in EVENT_KINDS.items() if kind.props is OfferRef
)

ERROR_CODES: Final = ("bad_json", "bad_frame", "unknown_event", "invalid_props", "rate_limited")


class Event(Struct, kw_only=True, forbid_unknown_fields=True, gc=False, tag_field="event"):
    """A validated event; one subclass an event kind, tagged by the kind's name."""

    name: ClassVar[str] = ""
    activity: ClassVar[bool] = False
    id: EventId
    ts: ClientTime | None = None
    props: Any = None


def _event_type(name: str, kind: EventKind) -> type[Event]:
    # Kinds without props may leave them out; the others must send them.
    props: tuple[str, Any] | tuple[str, Any, Any] = (
        ("props", kind.props, msgspec.field(default_factory=kind.props))
        if kind.props is NoProps
        else ("props", kind.props)
    )
    return cast(
        type[Event],
        msgspec.defstruct(
            f"{name.title().replace('_', '')}Event",
            [props],
            bases=(Event,),
            tag=name,
            kw_only=True,
            namespace={"name": name, "activity": kind.activity},
        ),
    )


EVENT_TYPES: Final[dict[str, type[Event]]] = {
    name: _event_type(name, kind) for name, kind in EVENT_KINDS.items()
}


@dataclass(frozen=True, slots=True)
class ProtocolError:
    code: str
    detail: str
    id: str | None = None

    def frame(self) -> dict[str, object]:
        return {"type": "error", "code": self.code, "detail": self.detail, "id": self.id}


class FrameError(Exception):
    """A frame that cannot be read at all; nothing in it is applied."""

    def __init__(self, error: ProtocolError) -> None:
        super().__init__(error.detail)
        self.error = error


_EMPTY: Final = Raw(b"{}")

# What msgspec raises, besides DecodeError, on input it cannot read: a string that is not UTF-8
# (bytes, or a str holding lone surrogates) and nesting deeper than the interpreter's stack.
UNREADABLE: Final = (UnicodeError, RecursionError)


def unreadable_detail(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON is nested too deeply"
    if isinstance(exc, UnicodeError):
        return "JSON is malformed: text is not valid UTF-8"
    return str(exc)


class _EventFields(Struct, forbid_unknown_fields=True, gc=False):
    id: EventId
    event: str
    ts: ClientTime | None = None
    props: Raw = _EMPTY


class _Track(_EventFields, tag="track", tag_field="type"):
    pass


class _Batch(Struct, tag="batch", tag_field="type", forbid_unknown_fields=True, gc=False):
    events: Annotated[list[Raw], Meta(max_length=MAX_BATCH_EVENTS)]


_frame_decoder = msgspec.json.Decoder(_Track | _Batch)
_event_decoder = msgspec.json.Decoder(_EventFields)
_props_decoders = {name: msgspec.json.Decoder(kind.props) for name, kind in EVENT_KINDS.items()}
_loose_decoder = msgspec.json.Decoder()


_AnyEvent = Union[tuple(EVENT_TYPES.values())]  # type: ignore[valid-type]  # noqa: UP007
_FastBatch = msgspec.defstruct(
    "_FastBatch",
    [("events", Annotated[list[_AnyEvent], Meta(max_length=MAX_BATCH_EVENTS)])],  # type: ignore[valid-type]
    tag="batch",
    tag_field="type",
    forbid_unknown_fields=True,
    gc=False,
)
# A valid batch, the common case, decodes in one pass straight into its events.
_fast_batch_decoder = msgspec.json.Decoder(_FastBatch)


def decode_frame(data: bytes | str) -> list[Event | ProtocolError]:
    """One client frame → its events in order, each valid or the error that refuses it.

    Raises FrameError, and nothing else, when the frame as a whole is unreadable (bad JSON,
    unknown type, batch too long); the caller answers it with one error frame.
    """
    if _looks_like_batch(data):
        try:
            batch: Any = _fast_batch_decoder.decode(data)
        except (msgspec.DecodeError, *UNREADABLE):
            pass  # some event is refused: the event-by-event path below says which and why
        else:
            return batch.events  # type: ignore[no-any-return]
    try:
        frame = _frame_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise FrameError(
            ProtocolError("bad_frame", _where(exc, "frame"), _loose_id(data))
        ) from None
    except (msgspec.DecodeError, *UNREADABLE) as exc:
        raise FrameError(ProtocolError("bad_json", unreadable_detail(exc))) from None
    if isinstance(frame, _Track):
        return [_validate(frame)]
    return [_decode_batch_item(raw, index) for index, raw in enumerate(frame.events)]


def _looks_like_batch(data: bytes | str) -> bool:
    head = data[:40]
    return (b'"batch"' in head) if isinstance(head, bytes) else ('"batch"' in head)


def decode_events(items: list[Raw]) -> list[Event | ProtocolError]:
    """The events of a `POST /collect/` body, under the same rules as a batch frame."""
    return [_decode_batch_item(raw, index) for index, raw in enumerate(items)]


def _decode_batch_item(raw: Raw, index: int) -> Event | ProtocolError:
    try:
        fields = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return ProtocolError("bad_frame", _where(exc, f"events[{index}]"), _loose_id(raw))
    except (msgspec.DecodeError, *UNREADABLE) as exc:
        return ProtocolError("bad_json", f"{unreadable_detail(exc)} - at `events[{index}]`")
    return _validate(fields)


def _validate(fields: _EventFields) -> Event | ProtocolError:
    decoder = _props_decoders.get(fields.event)
    if decoder is None:
        return ProtocolError("unknown_event", f"unknown event {fields.event[:64]!r}", fields.id)
    try:
        props = decoder.decode(fields.props)
    except msgspec.ValidationError as exc:
        return ProtocolError("invalid_props", _where(exc, "props"), fields.id)
    except (msgspec.DecodeError, *UNREADABLE) as exc:
        return ProtocolError("bad_json", f"{unreadable_detail(exc)} - at `props`", fields.id)
    return EVENT_TYPES[fields.event](id=fields.id, ts=fields.ts, props=props)


def _where(exc: msgspec.ValidationError, root: str) -> str:
    message = str(exc).replace("`$", f"`{root}")
    if " - at `" not in message:
        message = f"{message} - at `{root}`"
    return message


def _loose_id(data: bytes | str | Raw) -> str | None:
    """Best effort: the id of an event we refuse, so the client knows which one it was."""
    try:
        value = _loose_decoder.decode(data)
    except (msgspec.DecodeError, *UNREADABLE):
        return None
    event_id = value.get("id") if isinstance(value, dict) else None
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 64 else None
