"""Clickstreams at rest, replayed the one way: through the server's own protocol, state and
feature code, on a simulated clock.

A clickstream is a list of `ClickSession`s, each its events at their times. They come from the
event log (`streaming.eventlog`), a generated run, or a shop's own history in one of three
formats:

- `events`: a CSV with the columns `session,time,event,product,price` (time as ISO 8601 or Unix
  seconds; event one of page_view, product_view, search, add_to_cart, remove_from_cart,
  checkout_start, purchase; product and price where the event has them; for `search` the
  product column holds the query, for `purchase` the price column the order's total);
- `rees46`: the REES46 Open CDP CSV (`event_time,event_type,product_id,...,price,user_id,
  user_session`): view, cart, remove_from_cart and purchase rows, a session per user_session;
- `otto`: OTTO's JSON lines (`{"session", "events": [{"aid", "ts", "type"}]}`): clicks, carts
  and orders. OTTO has no prices: every product counts as `OTTO_PRICE`.

Every event goes through the protocol's validation (`decode_events`) as if a browser had sent
it; rows that do not pass are skipped and counted.

`replay` then walks each session as the live detector does: a pause wherever the next event
comes `pause_seconds` or more after the last activity with a cart that is not empty and not
bought, its features taken at the pause's deadline. Its label is 1 (abandoned) unless the
session buys within `outcome_window` seconds of the deadline.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from streaming.features import FEATURE_NAMES, feature_row
from streaming.protocol import Event, ProtocolError, decode_events
from streaming.state import SessionState

FORMATS: Final = ("events", "rees46", "otto")
OTTO_PRICE: Final = 50.0
GENERIC_EVENTS: Final = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
)

Floats = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]


@dataclass
class ClickSession:
    session_id: str
    site: str
    events: list[tuple[float, Event]] = field(default_factory=list)
    user: str = ""  # the shopper, where the source knows (REES46's user_id)

    @property
    def purchased(self) -> bool:
        return any(event.name == "purchase" for _, event in self.events)


@dataclass
class Read:
    """Sessions read from a source, and how many rows could not be used."""

    sessions: list[ClickSession]
    skipped: int = 0


class _Builder:
    """Raw event objects in, validated sessions out."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.sessions: dict[str, ClickSession] = {}
        self.skipped = 0
        self._raw: list[tuple[str, float, dict[str, Any]]] = []

    def add(self, session_id: str, at: float, name: str, props: dict[str, Any]) -> None:
        self._raw.append((session_id, at, {"event": name, "props": props}))

    def user(self, session_id: str, user: str) -> None:
        self.sessions.setdefault(session_id, ClickSession(session_id, self.site)).user = user

    def build(self) -> Read:
        raw = [
            msgspec.Raw(msgspec.json.encode({"id": f"i{index}", **event}))
            for index, (_, _, event) in enumerate(self._raw)
        ]
        for (session_id, at, _), item in zip(self._raw, decode_events(raw), strict=True):
            if isinstance(item, ProtocolError):
                self.skipped += 1
                continue
            self.sessions.setdefault(session_id, ClickSession(session_id, self.site))
            self.sessions[session_id].events.append((at, item))
        for session in self.sessions.values():
            session.events.sort(key=lambda timed: timed[0])
        return Read([s for s in self.sessions.values() if s.events], self.skipped)


def _product_view(builder: _Builder, session: str, at: float, product: str, price: float) -> None:
    builder.add(session, at, "page_view", {"url": f"/product/{product}", "page_type": "product"})
    builder.add(session, at, "product_view", {"product_id": product, "price": price})


def read_rees46(path: str | Path) -> Read:
    builder = _Builder("rees46")
    with Path(path).open(newline="") as file:
        for row in csv.DictReader(file):
            session = row.get("user_session") or ""
            try:
                at = dt.datetime.strptime(row["event_time"], "%Y-%m-%d %H:%M:%S %Z").replace(
                    tzinfo=dt.UTC
                )
                price = float(row["price"])
            except (KeyError, ValueError):
                builder.skipped += 1
                continue
            if not session:
                builder.skipped += 1
                continue
            when, product, kind = at.timestamp(), row["product_id"], row["event_type"]
            builder.user(session, row.get("user_id", ""))
            if kind == "view":
                _product_view(builder, session, when, product, price)
            elif kind == "cart":
                builder.add(session, when, "add_to_cart", {"product_id": product, "price": price})
            elif kind == "remove_from_cart":
                builder.add(session, when, "remove_from_cart", {"product_id": product})
            elif kind == "purchase":
                builder.add(session, when, "purchase", {"total": price})
            else:
                builder.skipped += 1
    return builder.build()


def read_otto(path: str | Path) -> Read:
    builder = _Builder("otto")
    with Path(path).open() as file:
        for line in file:
            if not line.strip():
                continue
            session = json.loads(line)
            session_id = str(session["session"])
            for event in session["events"]:
                when, product, kind = event["ts"] / 1000, str(event["aid"]), event["type"]
                if kind == "clicks":
                    _product_view(builder, session_id, when, product, OTTO_PRICE)
                elif kind == "carts":
                    builder.add(
                        session_id,
                        when,
                        "add_to_cart",
                        {"product_id": product, "price": OTTO_PRICE},
                    )
                elif kind == "orders":
                    builder.add(session_id, when, "purchase", {"total": OTTO_PRICE})
                else:
                    builder.skipped += 1
    return builder.build()


def parse_time(text: str) -> float:
    """Unix seconds, or ISO 8601 (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def read_events_csv(path: str | Path, *, site: str = "import") -> Read:
    builder = _Builder(site)
    with Path(path).open(newline="") as file:
        for row in csv.DictReader(file):
            try:
                session, at, name = row["session"], parse_time(row["time"]), row["event"]
                product, price = row.get("product") or "", row.get("price") or ""
            except (KeyError, ValueError):
                builder.skipped += 1
                continue
            if name not in GENERIC_EVENTS or not session:
                builder.skipped += 1
                continue
            props: dict[str, Any] = {}
            if name == "page_view":
                props = {"url": product or "/"}
            elif name == "search":
                props = {"query": product}
            elif name in ("product_view", "add_to_cart"):
                props = {"product_id": product, "price": float(price or "nan")}
            elif name == "remove_from_cart":
                props = {"product_id": product}
            elif name == "purchase" and price:
                props = {"total": float(price)}
            if name == "product_view":
                builder.add(session, at, "page_view", {"url": f"/product/{product}"})
            builder.add(session, at, name, props)
    return builder.build()


def from_log(logged: Iterable[Any]) -> Read:
    """Sessions of the event log (`streaming.eventlog.read_log`)."""
    sessions: dict[str, ClickSession] = {}
    for item in logged:
        session = sessions.setdefault(item.session, ClickSession(item.session, item.site))
        session.events.append((item.at, item.event))
    for session in sessions.values():
        session.events.sort(key=lambda timed: timed[0])
    return Read(list(sessions.values()))


def read_clickstream(path: str | Path, fmt: str) -> Read:
    """A file in one of FORMATS, or the event log's directory (fmt 'log')."""
    if fmt == "log":
        from streaming.eventlog import read_log

        return from_log(read_log(path))
    readers: dict[str, Callable[[str | Path], Read]] = {
        "events": read_events_csv,
        "rees46": read_rees46,
        "otto": read_otto,
    }
    if fmt not in readers:
        raise ValueError(f"unknown clickstream format {fmt!r}: one of {', '.join(FORMATS)}, log")
    return readers[fmt](path)


# --- replay ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pause:
    session_id: str
    site: str
    at: float  # the pause's deadline: when the live worker decides
    cart_value: float
    abandoned: bool
    user: str = ""


@dataclass
class Replayed:
    X: Floats  # pauses x features
    y: Floats  # 1 = abandoned
    pauses: list[Pause]

    def __len__(self) -> int:
        return len(self.pauses)


def replay_session(
    session: ClickSession, *, pause_seconds: float, outcome_window: float
) -> Iterator[tuple[list[float], Pause]]:
    """The session's pauses, as the live detector would see them: (features, pause)."""
    events = session.events
    if not events:
        return
    start = events[0][0]
    state = SessionState(
        session.session_id, session.site, started_at=start, last_seen=start, last_activity=start
    )
    purchases = [at for at, event in events if event.name == "purchase"]

    def pause(deadline: float) -> tuple[list[float], Pause]:
        bought = any(deadline < at <= deadline + outcome_window for at in purchases)
        row = feature_row(state, now=deadline)
        made = Pause(
            session.session_id, session.site, deadline, state.cart_value, not bought, session.user
        )
        return row, made

    taken = -1  # activity_seq of the last pause taken: one per pause
    for at, event in events:
        deadline = state.pause_deadline(pause_seconds)
        if deadline is not None and deadline <= at and state.activity_seq != taken:
            yield pause(deadline)
            taken = state.activity_seq
        state.apply(event, at)
    deadline = state.pause_deadline(pause_seconds)
    if deadline is not None and state.activity_seq != taken:
        yield pause(deadline)


def replay(
    sessions: Iterable[ClickSession],
    *,
    pause_seconds: float,
    outcome_window: float,
    progress: Progress | None = None,
) -> Replayed:
    """Every pause of every session as (X, y, pauses)."""
    sessions = list(sessions)
    rows: list[list[float]] = []
    pauses: list[Pause] = []
    for done, session in enumerate(sessions, start=1):
        for row, made in replay_session(
            session, pause_seconds=pause_seconds, outcome_window=outcome_window
        ):
            rows.append(row)
            pauses.append(made)
        if progress is not None and (done % 1000 == 0 or done == len(sessions)):
            progress(done, len(sessions))
    X = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
    y = np.asarray([1.0 if p.abandoned else 0.0 for p in pauses], dtype=np.float32)
    return Replayed(X, y, pauses)
