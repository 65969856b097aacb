"""A decision's reasons in a shop owner's words: what the shopper did, and which way it moved
the risk. One place for the dashboard, the admin and the API (pure functions, no Django).

A reason is one feature's TreeSHAP push (`{"feature", "value", "contribution"}`, positive raises
the risk). Features that say the same thing (product views, different products, pages) are one
topic: their reasons become one phrase, with their contributions summed, so that a decision
never says two things about one topic. The pause itself is never news: the time since the last
add to cart is said only when the add came clearly before the pause began.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

RAISES: Final = "raises risk"
LOWERS: Final = "lowers risk"
# How much longer than the pause the time since the add must be to be worth saying.
PAUSE_SLACK_SECONDS: Final = 5.0
# At or below these counts, a push up is worded as too little ("compared only 2 products").
_FEW: Final = {"browsing": 2, "comparing": 2, "searches": 1, "cart size": 1}

# feature -> topic: features of one topic become one phrase.
TOPICS: Final[dict[str, str]] = {
    "cart_value": "cart value",
    "cart_lines": "cart size",
    "cart_quantity": "cart size",
    "adds": "cart size",
    "distinct_products": "browsing",
    "product_views": "browsing",
    "page_views": "browsing",
    "views_since_add": "comparing",
    "seconds_since_add": "time since add",
    "session_seconds": "time on site",
    "searches": "searches",
    "removes": "removals",
    "hidden": "tab",
    "checkout_started": "checkout",
    "offers_seen": "offers seen",
    "hour_of_day": "hour",
}


@dataclass(frozen=True, slots=True)
class Phrase:
    """One topic of a decision's reasons, in words."""

    topic: str
    text: str  # what the shopper did: "compared only 2 products since adding to cart"
    contribution: float  # the topic's features' contributions, summed (log-odds)
    features: tuple[str, ...]  # the reasons' features it stands for

    @property
    def raises(self) -> bool:
        return self.contribution > 0

    def __str__(self) -> str:
        return f"{self.text} ({RAISES if self.raises else LOWERS})"


def reasons_in_words(
    reasons: Any, features: Mapping[str, Any] | None, *, pause_seconds: float
) -> list[str]:
    """The reasons as sentences, strongest first: "viewed 8 products across 12 pages (lowers
    risk)"."""
    return [str(phrase) for phrase in phrases(reasons, features, pause_seconds=pause_seconds)]


def phrases(
    reasons: Any, features: Mapping[str, Any] | None, *, pause_seconds: float
) -> list[Phrase]:
    """One phrase a topic of `reasons`, strongest push first.

    `features` (the decision's, by name) fills in the other features of a topic; anything in
    `reasons` that is not a reason (a record from elsewhere) is left out, and so is a reason
    that says nothing: the pause itself, or a push of exactly zero.
    """
    known = _numbers(features)
    by_topic: dict[str, dict[str, float]] = {}
    pushed: dict[str, float] = {}
    for feature, value, contribution in _reasons(reasons):
        topic = TOPICS.get(feature, feature)
        by_topic.setdefault(topic, {})[feature] = value
        pushed[topic] = pushed.get(topic, 0.0) + contribution
    said: list[Phrase] = []
    for topic, values in by_topic.items():
        contribution = pushed[topic]
        if contribution == 0:
            continue
        members = [f for f, t in TOPICS.items() if t == topic]
        # The topic's other features from the decision's, the reasons' own values first.
        seen = {f: known[f] for f in members if f in known} | values
        text = _say(topic, seen, raises=contribution > 0, pause_seconds=pause_seconds)
        if text is not None:
            said.append(Phrase(topic, text, contribution, tuple(values)))
    said.sort(key=lambda phrase: -abs(phrase.contribution))
    return said


# --- the words ---------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """45 s, 3 min, 2 h."""
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def money(value: float) -> str:
    return f"{value:,.2f}"


def hour(value: float) -> str:
    return f"at {int(value) % 24:02d}:00 UTC"


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _say(topic: str, v: Mapping[str, float], *, raises: bool, pause_seconds: float) -> str | None:
    say = _SAYINGS.get(topic)
    if say is None:
        # a feature of another features version: its name and value, as they are
        return "; ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in v.items())
    return say(v, raises, pause_seconds)


def _count(v: Mapping[str, float], name: str) -> int | None:
    value = v.get(name)
    return None if value is None else max(0, round(value))


def _only(topic: str, n: int, raises: bool) -> str:
    return "only " if raises and 0 < n <= _FEW[topic] else ""


def _cart_value(v: Mapping[str, float], _raises: bool, _pause: float) -> str:
    return f"cart worth {money(v['cart_value'])}"


def _cart_size(v: Mapping[str, float], raises: bool, _pause: float) -> str:
    items, lines, adds = _count(v, "cart_quantity"), _count(v, "cart_lines"), _count(v, "adds")
    if items is None and lines is None:
        assert adds is not None
        return f"added to cart {times(adds)}" if adds else "added nothing to the cart"
    if items is None:
        assert lines is not None
        items, lines = lines, None
    if items == 0:
        return "an empty cart"
    text = f"{_only('cart size', items, raises)}{plural(items, 'item', 'items')} in the cart"
    if lines is not None and 0 < lines != items:
        text += f" ({plural(lines, 'product', 'different products')})"
    return text


def _browsing(v: Mapping[str, float], raises: bool, _pause: float) -> str:
    products = _count(v, "distinct_products")
    if products is None:
        products = _count(v, "product_views")
    pages = _count(v, "page_views")
    if products is None:
        assert pages is not None
        return f"viewed {plural(pages, 'page', 'pages')}" if pages else "viewed no page"
    if products == 0:
        text = "viewed no product"
    else:
        only = _only("browsing", products, raises)
        text = f"viewed {only}{plural(products, 'product', 'products')}"
    if pages:
        text += f" across {plural(pages, 'page', 'pages')}"
    return text


def _comparing(v: Mapping[str, float], raises: bool, _pause: float) -> str:
    n = _count(v, "views_since_add") or 0
    if n == 0:
        return "viewed nothing since adding to cart"
    return f"compared {_only('comparing', n, raises)}{plural(n, 'product', 'products')} since adding to cart"


def _since_add(v: Mapping[str, float], _raises: bool, pause: float) -> str | None:
    seconds = v["seconds_since_add"]
    if seconds <= pause + PAUSE_SLACK_SECONDS:
        return None  # the pause itself: every paused cart waited this long
    return f"added to cart {duration(seconds)} ago"


def _on_site(v: Mapping[str, float], _raises: bool, _pause: float) -> str:
    return f"on the site for {duration(v['session_seconds'])}"


def _searches(v: Mapping[str, float], raises: bool, _pause: float) -> str:
    n = _count(v, "searches") or 0
    if n == 0:
        return "made no search"
    return f"made {_only('searches', n, raises)}{plural(n, 'search', 'searches')}"


def _removals(v: Mapping[str, float], _raises: bool, _pause: float) -> str:
    n = _count(v, "removes") or 0
    return f"removed from the cart {times(n)}" if n else "removed nothing from the cart"


def _tab(v: Mapping[str, float], _raises: bool, _pause: float) -> str:
    return "left the shop's tab" if v["hidden"] else "kept the shop's tab in view"


def _checkout(v: Mapping[str, float], _raises: bool, _pause: float) -> str:
    return "started checkout" if v["checkout_started"] else "has not started checkout"


def _offers_seen(v: Mapping[str, float], _raises: bool, _pause: float) -> str:
    n = _count(v, "offers_seen") or 0
    return f"shown {plural(n, 'offer', 'offers')} before" if n else "never shown an offer before"


def _hour(v: Mapping[str, float], _raises: bool, _pause: float) -> str:
    return hour(v["hour_of_day"])


_SAYINGS: Final[dict[str, Callable[[Mapping[str, float], bool, float], str | None]]] = {
    "cart value": _cart_value,
    "cart size": _cart_size,
    "browsing": _browsing,
    "comparing": _comparing,
    "time since add": _since_add,
    "time on site": _on_site,
    "searches": _searches,
    "removals": _removals,
    "tab": _tab,
    "checkout": _checkout,
    "offers seen": _offers_seen,
    "hour": _hour,
}
assert set(_SAYINGS) == set(TOPICS.values())


# --- reading what was recorded -----------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(features: Mapping[str, Any] | None) -> dict[str, float]:
    if not isinstance(features, Mapping):
        return {}
    found = {name: _finite(value) for name, value in features.items()}
    return {name: value for name, value in found.items() if value is not None}


def _reasons(reasons: Any) -> Iterable[tuple[str, float, float]]:
    """(feature, value, contribution) of each well-formed reason."""
    if not isinstance(reasons, list):
        return
    for reason in reasons:
        if not isinstance(reason, Mapping) or not isinstance(reason.get("feature"), str):
            continue
        value, contribution = _finite(reason.get("value")), _finite(reason.get("contribution"))
        if value is not None and contribution is not None:
            yield reason["feature"], value, contribution
