"""Live state of one shopper session, updated by each validated event.

A record is kept small (target: under 2 KB each, measured by `manage.py bench ingest`): counters
are plain ints, product ids are remembered as 32-bit hashes, and event ids for de-duplication as
a bounded ring of 64-bit hashes.
"""

from __future__ import annotations

import zlib
from array import array
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
RECENT_IDS: Final = 128


class CartFull(ValueError):
    pass


def _new_hash_array(code: str) -> array[int]:
    return array(code)


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
    # product_id -> (quantity, unit price)
    cart: dict[str, tuple[int, float]] = field(default_factory=dict)
    _products: array[int] = field(default_factory=lambda: _new_hash_array("I"))
    _recent: array[int] = field(default_factory=lambda: _new_hash_array("q"))
    _recent_next: int = 0

    # --- derived values -------------------------------------------------------------------
    @property
    def cart_value(self) -> float:
        return round(sum(quantity * price for quantity, price in self.cart.values()), 2)

    @property
    def cart_lines(self) -> int:
        return len(self.cart)

    @property
    def distinct_products(self) -> int:
        return len(self._products)

    def pause_deadline(self, pause_seconds: float) -> float | None:
        """When this session pauses, if nothing happens before: None when it cannot pause."""
        if not self.cart or self.purchased:
            return None
        return self.last_activity + pause_seconds

    def idle_until(self, idle_seconds: float) -> float:
        return self.last_seen + idle_seconds

    # --- de-duplication -------------------------------------------------------------------
    def has_seen(self, event_id: str) -> bool:
        return hash(event_id) in self._recent

    def remember(self, event_id: str) -> None:
        key = hash(event_id)
        if len(self._recent) < RECENT_IDS:
            self._recent.append(key)
        else:
            self._recent[self._recent_next] = key
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
        elif name == "offer_dismissed":
            self.offers_dismissed += 1
        # heartbeat: keeps the session alive and nothing else
        self.last_seen = now
        if event.activity:
            self.last_activity = now
            self.activity_seq += 1

    def _see_product(self, product_id: str) -> None:
        if len(self._products) < MAX_DISTINCT_PRODUCTS:
            key = zlib.crc32(product_id.encode())
            if key not in self._products:
                self._products.append(key)
