"""Live state of one shopper session, updated by each validated event.

A record is kept small (target: under 2 KB each, measured by `manage.py bench ingest`): product
ids are remembered as 32-bit hashes, and event ids for de-duplication as a bounded ring of 64-bit
hashes.

The numbers a decision reads (NUMBERS) live in one float64 array a session, `numbers`, rather
than in attributes: a batch of paused sessions becomes a (sessions x NUMBERS) matrix with one
join of their buffers, about 0.05 µs a session against 0.8 µs for reading 16 attributes each
(`manage.py bench scoring`). They read and write like attributes all the same.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Callable, Iterable
from typing import Final, Generic, TypeVar, overload

from streaming.policy import holdout_bucket
from streaming.protocol import (
    MAX_QUANTITY,
    AddToCart,
    Event,
    OfferRef,
    ProductView,
    RemoveFromCart,
    Visibility,
)

MAX_CART_LINES: Final = 50
MAX_DISTINCT_PRODUCTS: Final = 64
# Event ids remembered for de-duplication: more than a client re-sends after a reconnect.
RECENT_IDS: Final = 96
_ID_BYTES: Final = 8
_PRODUCT_BYTES: Final = 4

# `SessionState.numbers`, in this order. Times are epoch seconds, NaN for "never".
NUMBERS: Final = (
    "started_at",
    "last_activity",
    "last_add_at",
    "last_offer_at",
    "holdout_bucket",
    "cart_value",
    "cart_lines",
    "cart_quantity",
    "distinct_products",
    "product_views",
    "page_views",
    "views_since_add",
    "searches",
    "adds",
    "removes",
    "hidden",
    "checkout_started",
    "offers_shown",
)
(
    STARTED_AT,
    LAST_ACTIVITY,
    LAST_ADD_AT,
    LAST_OFFER_AT,
    HOLDOUT_BUCKET,
    CART_VALUE,
    CART_LINES,
    CART_QUANTITY,
    DISTINCT_PRODUCTS,
    PRODUCT_VIEWS,
    PAGE_VIEWS,
    VIEWS_SINCE_ADD,
    SEARCHES,
    ADDS,
    REMOVES,
    HIDDEN,
    CHECKOUT_STARTED,
    OFFERS_SHOWN,
) = range(len(NUMBERS))
_NEVER: Final = float("nan")
_FRESH: Final = array("d", [0.0] * len(NUMBERS))
_FRESH[LAST_ADD_AT] = _FRESH[LAST_OFFER_AT] = _NEVER

T = TypeVar("T")


class _Number(Generic[T]):
    """A `SessionState` attribute kept in its `numbers` array."""

    __slots__ = ("index", "read", "write")

    def __init__(self, index: int, read: Callable[[float], T], write: Callable[[T], float]) -> None:
        self.index, self.read, self.write = index, read, write

    @overload
    def __get__(self, state: None, owner: type) -> _Number[T]: ...
    @overload
    def __get__(self, state: SessionState, owner: type) -> T: ...
    def __get__(self, state: SessionState | None, owner: type) -> T | _Number[T]:
        if state is None:
            return self
        return self.read(state.numbers[self.index])

    def __set__(self, state: SessionState, value: T) -> None:
        state.numbers[self.index] = self.write(value)


def _count(index: int) -> _Number[int]:
    return _Number(index, int, float)


def _flag(index: int) -> _Number[bool]:
    return _Number(index, bool, float)


def _maybe(value: float) -> float | None:
    return None if value != value else value  # NaN is "never"


def _or_never(value: float | None) -> float:
    return _NEVER if value is None else value


def _moment(index: int) -> _Number[float | None]:
    """A time that may be "never" (None, kept as NaN)."""
    return _Number(index, _maybe, _or_never)


class CartFull(ValueError):
    pass


def _holds(packed: bytearray, key: bytes) -> bool:
    """Whether `packed`, a run of fixed-width keys, holds `key` (searched in C, aligned)."""
    width = len(key)
    at = packed.find(key)
    while at != -1:
        if at % width == 0:
            return True
        at = packed.find(key, at + 1)
    return False


class SessionState:
    __slots__ = (
        "_products",
        "_recent",
        "_recent_next",
        "activity_seq",
        "cart",
        "decided_seq",
        "last_seen",
        "numbers",
        "offer_expires_at",
        "offer_frame",
        "offer_id",
        "offers_accepted",
        "offers_dismissed",
        "purchased",
        "session_id",
        "site",
    )

    # kept in `numbers`
    started_at = _Number(STARTED_AT, float, float)
    last_activity = _Number(LAST_ACTIVITY, float, float)
    last_add_at = _moment(LAST_ADD_AT)
    # When the session last got an `offer` or `holdout` decision (for the cooldown).
    last_offer_at = _moment(LAST_OFFER_AT)
    holdout_bucket = _count(HOLDOUT_BUCKET)
    page_views = _count(PAGE_VIEWS)
    product_views = _count(PRODUCT_VIEWS)
    views_since_add = _count(VIEWS_SINCE_ADD)
    searches = _count(SEARCHES)
    adds = _count(ADDS)
    removes = _count(REMOVES)
    hidden = _flag(HIDDEN)
    checkout_started = _flag(CHECKOUT_STARTED)
    offers_shown = _count(OFFERS_SHOWN)

    def __init__(
        self,
        session_id: str,
        site: str,
        *,
        started_at: float,
        last_seen: float,
        last_activity: float,
    ) -> None:
        self.session_id = session_id
        self.site = site
        self.last_seen = last_seen
        self.purchased = False
        self.offers_accepted = 0
        self.offers_dismissed = 0
        # Counts activity events; a pause is identified by (session, activity_seq) at its start.
        self.activity_seq = 0
        # The activity_seq whose pause has been decided: each pause gets exactly one decision.
        self.decided_seq = -1
        # The live offer's frame, sent again when the shopper reconnects before it expires.
        self.offer_frame: str | None = None
        self.offer_id: str | None = None
        self.offer_expires_at = 0.0
        # product_id -> (quantity, unit price)
        self.cart: dict[str, tuple[int, float]] = {}
        self.numbers = array("d", _FRESH)
        self.numbers[STARTED_AT] = started_at
        self.numbers[LAST_ACTIVITY] = last_activity
        self.numbers[HOLDOUT_BUCKET] = holdout_bucket(session_id)
        # 32-bit hashes of the products seen, and 64-bit hashes of recent event ids, packed.
        self._products = bytearray()
        self._recent = bytearray()
        self._recent_next = 0

    def __repr__(self) -> str:
        described = ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELDS[2:])
        return f"SessionState({self.session_id!r}, {self.site!r}, {described})"

    # --- derived values -------------------------------------------------------------------
    @property
    def cart_value(self) -> float:
        """Sum of quantity x unit price over the cart, to the cent."""
        return self.numbers[CART_VALUE]

    @property
    def cart_lines(self) -> int:
        return len(self.cart)

    @property
    def cart_quantity(self) -> int:
        return int(self.numbers[CART_QUANTITY])

    @property
    def cart_open(self) -> bool:
        """A cart with something in it that was not bought."""
        return bool(self.cart) and not self.purchased

    @property
    def distinct_products(self) -> int:
        return len(self._products) // _PRODUCT_BYTES

    def pause_deadline(self, pause_seconds: float) -> float | None:
        """When this session pauses, if nothing happens before: None when it cannot pause."""
        if not self.cart or self.purchased or self.decided_seq == self.activity_seq:
            return None
        return self.numbers[LAST_ACTIVITY] + pause_seconds

    @property
    def pause_key(self) -> str:
        """Names the current pause: one decision per key, whichever worker makes it."""
        return f"{self.session_id}:{self.activity_seq}"

    def live_offer(self, now: float) -> str | None:
        """The offer frame to show again on reconnect, while it is valid and unanswered."""
        if self.offer_frame is None or now >= self.offer_expires_at:
            return None
        return self.offer_frame

    def idle_until(self, idle_seconds: float) -> float:
        return self.last_seen + idle_seconds

    # --- de-duplication -------------------------------------------------------------------
    # Python's str hash is per process, like this in-memory state; a shared store keeps its own.
    def has_seen(self, event_id: str) -> bool:
        return _holds(self._recent, hash(event_id).to_bytes(_ID_BYTES, "little", signed=True))

    def remember(self, event_id: str) -> None:
        key = hash(event_id).to_bytes(_ID_BYTES, "little", signed=True)
        if len(self._recent) < RECENT_IDS * _ID_BYTES:
            self._recent += key
        else:
            at = self._recent_next * _ID_BYTES
            self._recent[at : at + _ID_BYTES] = key
            self._recent_next = (self._recent_next + 1) % RECENT_IDS

    # --- updates --------------------------------------------------------------------------
    def apply(self, event: Event, now: float) -> None:
        """Apply one validated event received at `now`. Raises CartFull, changing nothing.

        Redis mode applies events with a Lua twin of this method, streaming/lua/apply.lua: a
        change here is a change there too, and
        tests/streaming/test_redis_store.py::test_it_holds_the_same_state_as_the_memory_store
        fails until both agree.
        """
        props = event.props
        name = event.name
        numbers = self.numbers
        if name == "add_to_cart":
            assert isinstance(props, AddToCart)
            line = self.cart.get(props.product_id)
            if line is None and len(self.cart) >= MAX_CART_LINES:
                raise CartFull(f"the cart already holds {MAX_CART_LINES} different products")
            quantity = min((line[0] if line else 0) + props.quantity, MAX_QUANTITY)
            self.cart[props.product_id] = (quantity, props.price)
            self._count_cart()
            self._see_product(props.product_id)
            numbers[ADDS] += 1
            numbers[LAST_ADD_AT] = now
            numbers[VIEWS_SINCE_ADD] = 0
        elif name == "product_view":
            assert isinstance(props, ProductView)
            self._see_product(props.product_id)
            numbers[PRODUCT_VIEWS] += 1
            numbers[VIEWS_SINCE_ADD] += 1
        elif name == "page_view":
            numbers[PAGE_VIEWS] += 1
        elif name == "search":
            numbers[SEARCHES] += 1
        elif name == "remove_from_cart":
            assert isinstance(props, RemoveFromCart)
            line = self.cart.get(props.product_id)
            if line is not None:
                left = 0 if props.quantity is None else line[0] - props.quantity
                if left > 0:
                    self.cart[props.product_id] = (left, line[1])
                else:
                    del self.cart[props.product_id]
                self._count_cart()
            numbers[REMOVES] += 1
        elif name == "checkout_start":
            numbers[CHECKOUT_STARTED] = 1
        elif name == "purchase":
            self.purchased = True
        elif name == "visibility":
            assert isinstance(props, Visibility)
            numbers[HIDDEN] = props.state == "hidden"
        elif name == "offer_shown":
            assert isinstance(props, OfferRef)
            numbers[OFFERS_SHOWN] += 1
        elif name == "offer_accepted":
            self.offers_accepted += 1
            self._settle_offer(props)
        elif name == "offer_dismissed":
            self.offers_dismissed += 1
            self._settle_offer(props)
        # heartbeat: keeps the session alive and nothing else
        self.last_seen = now
        if event.activity:
            numbers[LAST_ACTIVITY] = now
            self.activity_seq += 1

    # --- restoring (a shared store rebuilds a session from what it keeps) ------------------
    def restore_cart(self, cart: dict[str, tuple[int, float]]) -> None:
        self.cart = cart
        self._count_cart()

    def restore_products(self, packed: Iterable[bytes]) -> None:
        """The distinct products seen, as their packed 4-byte CRC32s, in order."""
        self._products = bytearray(b"".join(packed))
        self.numbers[DISTINCT_PRODUCTS] = self.distinct_products

    def _count_cart(self) -> None:
        value = 0.0
        quantity = 0
        for line_quantity, price in self.cart.values():
            value += line_quantity * price
            quantity += line_quantity
        numbers = self.numbers
        numbers[CART_VALUE] = round(value, 2)
        numbers[CART_LINES] = len(self.cart)
        numbers[CART_QUANTITY] = quantity

    def _settle_offer(self, props: object) -> None:
        # An answered offer is not shown again on the next page.
        if isinstance(props, OfferRef) and props.offer_id == self.offer_id:
            self.offer_frame = None

    def _see_product(self, product_id: str) -> None:
        if len(self._products) < MAX_DISTINCT_PRODUCTS * _PRODUCT_BYTES:
            key = zlib.crc32(product_id.encode()).to_bytes(_PRODUCT_BYTES, "little")
            if not _holds(self._products, key):
                self._products += key
                self.numbers[DISTINCT_PRODUCTS] += 1


# What describes a session, for `repr` and for comparing stores.
FIELDS: Final = (
    "session_id",
    "site",
    *NUMBERS,
    "last_seen",
    "purchased",
    "offers_accepted",
    "offers_dismissed",
    "activity_seq",
    "decided_seq",
    "offer_frame",
    "offer_id",
    "offer_expires_at",
    "cart",
)
