"""What the generator's personas stand for, measured the same way on real shoppers and on the
generator itself: the figures `streaming.generator` is calibrated to, and the check that it is.

Three sources, each as far as it goes:

- the UCI Online Shoppers Purchasing Intention table (Sakar et al. 2019; one row a session:
  pages and seconds by kind of page, and whether it bought; tests/fixtures/online_shoppers/);
- a clickstream read by `streaming.clickstream` (the REES46 sample: view, cart and purchase
  rows), only its shoppers of an even `user_id`: those of an odd one are held out to judge
  models (`bench realdata`) and are never looked at here;
- generated sessions, their events read as a clickstream the same way.

Only what every clickstream logs is counted: product views, adds, removes and purchases. Pages
that are not a product's, searches, checkouts and tab switches are left out, as REES46 has none
of them; a gap is the time between two counted steps, whatever pages lay between.

`TARGETS` lists the figures the generator is fitted to, each with its source and a tolerance;
`STATISTICS` says what each figure means.
"""

from __future__ import annotations

import csv
import itertools
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streaming.clickstream import ClickSession
from streaming.generator import GeneratedSession

Progress = Callable[[int, int], None]

# name -> what it means; every source gives what it can, None for the rest.
STATISTICS: Final[dict[str, str]] = {
    "sessions": "sessions measured",
    "gap_seconds": "median seconds between two product views (or adds, purchases) in a row",
    "product_views": "median product views a session",
    "product_views_bought": "median product views a session that bought",
    "product_views_left": "median product views a session that did not buy",
    "session_seconds": "median seconds from a session's first step to its last",
    "bought": "share of sessions that buy",
    "carted": "share of sessions that add to the cart",
    "carts_bought": "share of carted sessions that buy",
    "basket_adds": "mean adds to the cart a carted session",
    "views_before_add": "median product views before a carted session's first add",
    "bought_browsing_on": "share of carted sessions that bought with a product view after the "
    "last add",
    "left_browsing_on": "share of carted sessions that left with a product view after the last add",
    "add_to_purchase_seconds": "median seconds from the last add to the purchase",
    "price": "median price of a product viewed",
}

_COUNTED: Final = frozenset({"product_view", "add_to_cart", "remove_from_cart", "purchase"})


@dataclass
class Figures:
    """One source's STATISTICS, None where it has no such figure."""

    source: str
    values: dict[str, float | None] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float | None:
        return self.values.get(name)


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- clickstreams ------------------------------------------------------------------------------


def of_sessions(
    sessions: Iterable[ClickSession], *, source: str, progress: Progress | None = None
) -> Figures:
    """STATISTICS of clickstream sessions (`streaming.clickstream`)."""
    sessions = list(sessions)
    gaps: list[float] = []
    lengths: list[float] = []
    views: dict[bool, list[float]] = {True: [], False: []}
    prices: list[float] = []
    baskets: list[float] = []
    before_add: list[float] = []
    browsing_on: dict[bool, list[bool]] = {True: [], False: []}
    to_purchase: list[float] = []
    for done, session in enumerate(sessions, start=1):
        # [(time, event)] of the steps every source logs, in order
        steps = [(at, event) for at, event in session.events if event.name in _COUNTED]
        times = [at for at, _ in steps]
        gaps.extend(later - earlier for earlier, later in itertools.pairwise(times))
        lengths.append(times[-1] - times[0] if times else 0.0)
        bought = session.purchased
        viewed = [at for at, event in steps if event.name == "product_view"]
        views[bought].append(float(len(viewed)))
        prices.extend(
            float(event.props.price) for _, event in steps if event.name == "product_view"
        )
        adds = [at for at, event in steps if event.name == "add_to_cart"]
        if adds:
            baskets.append(float(len(adds)))
            before_add.append(float(sum(1 for at in viewed if at < adds[0])))
            purchases = [at for at, event in steps if event.name == "purchase" and at >= adds[-1]]
            until = purchases[0] if purchases else float("inf")
            browsing_on[bought].append(any(adds[-1] < at < until for at in viewed))
            if purchases:
                to_purchase.append(purchases[0] - adds[-1])
        if progress is not None and (done % 1000 == 0 or done == len(sessions)):
            progress(done, len(sessions))
    carted = len(baskets)
    carts_bought = len(browsing_on[True])
    return Figures(
        source,
        {
            "sessions": float(len(sessions)),
            "gap_seconds": _median(gaps),
            "product_views": _median(views[True] + views[False]),
            "product_views_bought": _median(views[True]),
            "product_views_left": _median(views[False]),
            "session_seconds": _median(lengths),
            "bought": _share(len(views[True]), len(sessions)),
            "carted": _share(carted, len(sessions)),
            "carts_bought": _share(carts_bought, carted),
            "basket_adds": _mean(baskets),
            "views_before_add": _median(before_add),
            "bought_browsing_on": _share(sum(browsing_on[True]), carts_bought),
            "left_browsing_on": _share(sum(browsing_on[False]), carted - carts_bought),
            "add_to_purchase_seconds": _median(to_purchase),
            "price": _median(prices),
        },
    )


def even_users(sessions: Iterable[ClickSession]) -> list[ClickSession]:
    """The sessions of shoppers with an even numeric `user` (as `offers.training.user_half`
    splits them: the odd half is held out to judge models)."""
    return [s for s in sessions if s.user.isdigit() and int(s.user) % 2 == 0]


def as_clicksessions(sessions: Iterable[GeneratedSession]) -> Iterator[ClickSession]:
    """Generated sessions as a clickstream: their validated events from time 0."""
    for n, session in enumerate(sessions):
        yield ClickSession(f"generated-{n}", "generated", session.timed_events(0.0))


# --- the UCI table -----------------------------------------------------------------------------

UCI_COLUMNS: Final = ("ProductRelated", "ProductRelated_Duration", "Revenue")
_UCI_DURATIONS: Final = (
    "Administrative_Duration",
    "Informational_Duration",
    "ProductRelated_Duration",
)


def of_uci(path: str | Path) -> Figures:
    """STATISTICS of the UCI Online Shoppers table, as far as it has them.

    A row is a session: `ProductRelated` (product-related pages: products and their listings)
    and `ProductRelated_Duration` (seconds on them) give the views and the gap (seconds a page,
    the median over sessions with both above 0); `Revenue` whether it bought; the three
    durations summed, the session's length. Rows with a missing or negative figure (a few in
    some copies of the table) are skipped. It has no carts and no prices.
    """
    views: dict[bool, list[float]] = {True: [], False: []}
    per_page: list[float] = []
    lengths: list[float] = []
    with Path(path).open(newline="") as file:
        for row in csv.DictReader(file):
            try:
                pages = float(row["ProductRelated"])
                seconds = float(row["ProductRelated_Duration"])
                length = sum(float(row[column]) for column in _UCI_DURATIONS)
            except (KeyError, ValueError):
                continue
            if pages < 0 or seconds < 0 or length < 0:
                continue
            bought = row["Revenue"].strip().upper() == "TRUE"
            views[bought].append(pages)
            lengths.append(length)
            if pages > 0 and seconds > 0:
                per_page.append(seconds / pages)
    sessions = len(views[True]) + len(views[False])
    return Figures(
        "UCI Online Shoppers",
        {
            "sessions": float(sessions),
            "gap_seconds": _median(per_page),
            "product_views": _median(views[True] + views[False]),
            "product_views_bought": _median(views[True]),
            "product_views_left": _median(views[False]),
            "session_seconds": _median(lengths),
            "bought": _share(len(views[True]), sessions),
        },
    )


# --- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    statistic: str  # one of STATISTICS
    value: float
    source: str
    tolerance: float  # the generator's figure may be off by this fraction of `value`

    def met_by(self, figure: float | None) -> bool:
        return figure is not None and abs(figure - self.value) <= self.tolerance * self.value


REES46_EVEN: Final = "REES46 sample, even user_id"
# The generator's calibration (its constants say which of these each one fits). Figures of the
# REES46 sample's even half (2,554 sessions, 55 of them carted, 30 of those bought), and of the
# UCI table as shipped. Tolerances allow for the generator's own noise and for figures measured
# on few carts.
TARGETS: Final[tuple[Target, ...]] = (
    Target("gap_seconds", 33.0, f"{REES46_EVEN} (UCI: 30.3 s a product page)", 0.15),
    Target("carts_bought", 0.30, "Baymard Institute: 70% of carts abandoned (REES46: 0.55)", 0.1),
    Target("basket_adds", 1.47, REES46_EVEN, 0.15),
    Target("views_before_add", 1.0, REES46_EVEN, 0.0),
    Target("bought_browsing_on", 0.10, REES46_EVEN, 0.5),
    Target("left_browsing_on", 0.60, REES46_EVEN, 0.15),
    Target("add_to_purchase_seconds", 70.5, REES46_EVEN, 0.15),
)


def table(columns: list[Figures]) -> str:
    """STATISTICS side by side, a column a source, and the target's where there is one."""
    targets = {t.statistic: t for t in TARGETS}
    width = max(len(name) for name in STATISTICS) + 2
    heads = [column.source[:28] for column in columns]
    lines = [f"{'statistic':<{width}}" + "".join(f"{h:>30}" for h in heads) + f"{'target':>10}"]
    for name in STATISTICS:
        cells = "".join(f"{_cell(column[name]):>30}" for column in columns)
        target = targets.get(name)
        lines.append(f"{name:<{width}}{cells}{_cell(target.value) if target else '':>10}".rstrip())
    lines.append("")
    lines.extend(f"target {t.statistic}: {t.source}, within {t.tolerance:.0%}" for t in TARGETS)
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000 or value == int(value):
        return f"{value:,.0f}"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}"
