"""The model's view of a session: one documented, versioned list of features.

`FEATURE_NAMES` is the contract between live scoring and training: a model whose feature names
differ is refused. Change the list only with a new `FEATURES_VERSION`, and retrain.

What produces each feature, in a real browser (the snippet, docs/PROTOCOL.md) and in the
generator (`streaming.generator`), which must agree (tests/browser/test_demo.py walks the
generator's personas through the demo shop in Chromium and compares):

- cart_value, cart_lines, cart_quantity, adds, removes: `add_to_cart` and `remove_from_cart`,
  sent by the snippet on a click of an element carrying `data-lo-event` (the demo shop's "Add to
  cart" on a product page and on the home page's list, "Remove" in the cart); the generator adds
  from a product's page, or now and then from a list.
- product_views, views_since_add: `product_view`, sent by the shop's page for a product (the
  demo's product page calls `liveoffers('track', 'product_view', ...)` as it loads).
- distinct_products: the product ids of `product_view` and `add_to_cart`.
- page_views: `page_view`, sent by the snippet as every page loads (a product page sends both).
- searches: `search`, sent by the shop's search page (the demo shop has none).
- checkout_started: `checkout_start`, sent by the shop's checkout page as it loads.
- hidden: `visibility`, sent by the snippet with the page's state as every page loads and comes
  back from the back-forward cache, and when the tab is switched away from or back to while the
  page stays; leaving a page (a click to the next one, or closing it) sends none, so moving
  between the shop's pages is not "hidden". The generator switches tabs now and then.
- offers_seen: `offer_shown`, sent by the snippet once it has shown an offer.
- seconds_since_add, session_seconds, hour_of_day: the server's clock at decision time, from the
  server's receive time of the last `add_to_cart` and of the session's first event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from operator import attrgetter
from typing import Final

import numpy as np
import numpy.typing as npt

from streaming.state import LAST_ADD_AT, NUMBERS, STARTED_AT, SessionState

FEATURES_VERSION: Final = 1

# name -> what it means (the README's feature table is generated from the same words)
FEATURES: Final[dict[str, str]] = {
    "cart_value": "value of the cart (sum of quantity x unit price)",
    "cart_lines": "different products in the cart",
    "cart_quantity": "items in the cart (sum of quantities)",
    "distinct_products": "different products viewed or added (up to 64)",
    "product_views": "product pages viewed",
    "page_views": "pages viewed",
    "views_since_add": "product pages viewed since the last add to cart (comparing)",
    "seconds_since_add": "seconds since the last add to cart",
    "session_seconds": "seconds since the session started",
    "searches": "searches made",
    "adds": "add-to-cart events",
    "removes": "remove-from-cart events",
    "hidden": "1 when the shop's tab is hidden",
    "checkout_started": "1 once checkout has started",
    "offers_seen": "offers shown to the session before",
    "hour_of_day": "hour of the day (UTC) at decision time",
}
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(FEATURES)

Floats = npt.NDArray[np.float64]

# Features that are one of the session's NUMBERS as they stand; the other three depend on the
# clock.
_NUMBER_OF: Final = {name: name for name in NUMBERS} | {"offers_seen": "offers_shown"}
_COPIED: Final = [i for i, name in enumerate(FEATURE_NAMES) if name in _NUMBER_OF]
_COPIED_FROM: Final = [NUMBERS.index(_NUMBER_OF[FEATURE_NAMES[i]]) for i in _COPIED]
_SECONDS_SINCE_ADD: Final = FEATURE_NAMES.index("seconds_since_add")
_SESSION_SECONDS: Final = FEATURE_NAMES.index("session_seconds")
_HOUR_OF_DAY: Final = FEATURE_NAMES.index("hour_of_day")
_numbers_of = attrgetter("numbers")


def session_numbers(states: Sequence[SessionState]) -> Floats:
    """A batch of sessions' NUMBERS as one (sessions x NUMBERS) float64 matrix (a copy)."""
    packed = b"".join(map(_numbers_of, states))
    return np.frombuffer(packed, dtype=np.float64).reshape(len(states), len(NUMBERS))


def features_of(numbers: Floats, now: float) -> npt.NDArray[np.float32]:
    """The (sessions x features) float32 matrix the model scores, from `session_numbers`."""
    matrix = np.empty((len(numbers), len(FEATURE_NAMES)), dtype=np.float32)
    matrix[:, _COPIED] = numbers[:, _COPIED_FROM]
    started = numbers[:, STARTED_AT]
    last_add = numbers[:, LAST_ADD_AT]
    # never added to the cart: since the session started
    since_add = now - np.where(np.isnan(last_add), started, last_add)
    matrix[:, _SECONDS_SINCE_ADD] = np.maximum(since_add, 0.0)
    matrix[:, _SESSION_SECONDS] = np.maximum(now - started, 0.0)
    matrix[:, _HOUR_OF_DAY] = time.gmtime(now).tm_hour
    return matrix


def feature_matrix(states: Sequence[SessionState], now: float) -> npt.NDArray[np.float32]:
    """A batch of sessions as one (sessions x features) float32 matrix for the model."""
    return features_of(session_numbers(states), now)


def feature_row(state: SessionState, now: float) -> list[float]:
    """One session's features, in FEATURE_NAMES order."""
    row: list[float] = feature_matrix([state], now)[0].tolist()
    return row


def as_dict(row: Sequence[float]) -> dict[str, float]:
    """One row of features by name, to 4 decimals (as decisions record them)."""
    return {name: round(float(value), 4) for name, value in zip(FEATURE_NAMES, row, strict=True)}


def as_dicts(matrix: npt.NDArray[np.float32]) -> list[dict[str, float]]:
    """`as_dict` of every row of a batch, rounded in one go."""
    rows: list[list[float]] = np.round(matrix.astype(np.float64), 4).tolist()
    return [dict(zip(FEATURE_NAMES, row, strict=True)) for row in rows]
