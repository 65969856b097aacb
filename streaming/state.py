"""Live state of one shopper session, updated by each validated event.

A record is kept small (target: under 2 KB each, measured by `manage.py bench ingest`): counters
are plain ints, product ids are remembered as 32-bit hashes, and event ids for de-duplication as
a bounded ring of 64-bit hashes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Final

from streaming.protocol import (
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


@dataclass(slots=True)
class SessionState:
    session_id: str
    site: str
    started_at: float
    last_seen: float
    last_activity: float
    last_add_at: float | None = None
    page_views: int = 0
    product_views: int = 0
    searches: int = 0
    adds: int = 0
    removes: int = 0
    views_since_add: int = 0
    hidden: bool = False
    checkout_started: bool = False
    purchased: bool = False
    offers_shown: int = 0
    offers_accepted: int = 0
    offers_dismissed: int = 0
    # Counts activity events; a pause is identified by (session, activity_seq) at its start.
    activity_seq: int = 0
    # The activity_seq whose pause has been decided: each pause gets exactly one decision.
    decided_seq: int = -1
    # When the session last got an `offer` or `holdout` decision (for the cooldown).
    last_offer_at: float | None = None
    # The live offer's frame, sent again when the shopper reconnects before it expires.
    offer_frame: str | None = None
    offer_id: str | None = None
    offer_expires_at: float = 0.0
    # product_id -> (quantity, unit price)
    cart: dict[str, tuple[int, float]] = field(default_factory=dict)
    # 32-bit hashes of the products seen, and 64-bit hashes of recent event ids, packed.
    _products: bytearray = field(default_factory=bytearray)
    _recent: bytearray = field(default_factory=bytearray)
    _recent_next: int = 0

    # --- derived values -------------------------------------------------------------------
    @property
    def cart_value(self) -> float:
        return round(sum(quantity * price for quantity, price in self.cart.values()), 2)

    @property
    def cart_open(self) -> bool:
        """A cart with something in it that was not bought."""
        return bool(self.cart) and not self.purchased

    @property
    def cart_lines(self) -> int:
        return len(self.cart)

    @property
    def distinct_products(self) -> int:
        return len(self._products) // _PRODUCT_BYTES

    def pause_deadline(self, pause_seconds: float) -> float | None:
        """When this session pauses, if nothing happens before: None when it cannot pause."""
        if not self.cart or self.purchased or self.decided_seq == self.activity_seq:
            return None
        return self.last_activity + pause_seconds

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
        """Apply one validated event received at `now`. Raises CartFull, changing nothing."""
        props = event.props
        name = event.name
        if name == "add_to_cart":
            assert isinstance(props, AddToCart)
            line = self.cart.get(props.product_id)
            if line is None and len(self.cart) >= MAX_CART_LINES:
                raise CartFull(f"the cart already holds {MAX_CART_LINES} different products")
            quantity = min((line[0] if line else 0) + props.quantity, 999)
            self.cart[props.product_id] = (quantity, props.price)
            self._see_product(props.product_id)
            self.adds += 1
            self.last_add_at = now
            self.views_since_add = 0
        elif name == "product_view":
            assert isinstance(props, ProductView)
            self._see_product(props.product_id)
            self.product_views += 1
            self.views_since_add += 1
        elif name == "page_view":
            self.page_views += 1
        elif name == "search":
            self.searches += 1
        elif name == "remove_from_cart":
            assert isinstance(props, RemoveFromCart)
            line = self.cart.get(props.product_id)
            if line is not None:
                left = 0 if props.quantity is None else line[0] - props.quantity
                if left > 0:
                    self.cart[props.product_id] = (left, line[1])
                else:
                    del self.cart[props.product_id]
            self.removes += 1
        elif name == "checkout_start":
            self.checkout_started = True
        elif name == "purchase":
            self.purchased = True
        elif name == "visibility":
            assert isinstance(props, Visibility)
            self.hidden = props.state == "hidden"
        elif name == "offer_shown":
            assert isinstance(props, OfferRef)
            self.offers_shown += 1
        elif name == "offer_accepted":
            self.offers_accepted += 1
            self._settle_offer(props)
        elif name == "offer_dismissed":
            self.offers_dismissed += 1
            self._settle_offer(props)
        # heartbeat: keeps the session alive and nothing else
        self.last_seen = now
        if event.activity:
            self.last_activity = now
            self.activity_seq += 1

    def _settle_offer(self, props: object) -> None:
        # An answered offer is not shown again on the next page.
        if isinstance(props, OfferRef) and props.offer_id == self.offer_id:
            self.offer_frame = None

    def _see_product(self, product_id: str) -> None:
        if len(self._products) < MAX_DISTINCT_PRODUCTS * _PRODUCT_BYTES:
            key = zlib.crc32(product_id.encode()).to_bytes(_PRODUCT_BYTES, "little")
            if not _holds(self._products, key):
                self._products += key
