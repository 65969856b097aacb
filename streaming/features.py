"""The model's view of a session: one documented, versioned list of features.

`FEATURE_NAMES` is the contract between live scoring and training: a model whose feature names
differ is refused. Change the list only with a new `FEATURES_VERSION`, and retrain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from streaming.state import SessionState

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


def feature_row(state: SessionState, now: float) -> list[float]:
    """One session's features, in FEATURE_NAMES order."""
    cart = state.cart.values()
    last_add = state.last_add_at if state.last_add_at is not None else state.started_at
    return [
        state.cart_value,
        float(len(state.cart)),
        float(sum(quantity for quantity, _ in cart)),
        float(state.distinct_products),
        float(state.product_views),
        float(state.page_views),
        float(state.views_since_add),
        max(0.0, now - last_add),
        max(0.0, now - state.started_at),
        float(state.searches),
        float(state.adds),
        float(state.removes),
        1.0 if state.hidden else 0.0,
        1.0 if state.checkout_started else 0.0,
        float(state.offers_shown),
        float(time.gmtime(now).tm_hour),
    ]


def feature_matrix(states: Sequence[SessionState], now: float) -> npt.NDArray[np.float32]:
    """A batch of sessions as one (sessions x features) float32 matrix for the model."""
    matrix = np.empty((len(states), len(FEATURE_NAMES)), dtype=np.float32)
    for i, state in enumerate(states):
        matrix[i] = feature_row(state, now)
    return matrix


def as_dict(row: Sequence[float]) -> dict[str, float]:
    return {name: round(float(value), 4) for name, value in zip(FEATURE_NAMES, row, strict=True)}
