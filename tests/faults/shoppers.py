"""What the fault tests share: carts that pause over real sockets, and the record read back.

- `pause_carts(ws_url, count, then=(...))`: `count` shoppers at once, each fills its cart, waits
  for its offer and at once answers it with the events named in `then` (`offer_shown`,
  `offer_accepted`, `offer_dismissed`, `purchase` with the offer's code), each acknowledged.
  Returns one `Cart` each, failures included (`Cart.error`), never raises for a cart.
- `read_record(env)`: the database of a server's env, as plain values (`Recorded`).
- `reconcile(env)`: `manage.py reconcile`, asserted whole.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets

from tests.factories import track
from tests.subprocesses import manage

FOLLOW_UPS = ("offer_shown", "offer_accepted", "offer_dismissed", "purchase")


@dataclass
class Cart:
    """One shopper's cart and what became of it."""

    number: int
    session: str = ""
    token: str = ""
    offer: dict[str, Any] | None = None
    # Seconds from the add_to_cart's ack to the offer frame's arrival (the pause included).
    offer_after: float | None = None
    # Seconds from the offer frame's arrival to the last follow-up event sent.
    answered_within: float | None = None
    acked: set[str] = field(default_factory=set)
    error: str = ""

    @property
    def code(self) -> str | None:
        return None if self.offer is None else str(self.offer["code"])

    @property
    def offer_id(self) -> str | None:
        return None if self.offer is None else str(self.offer["offer_id"])


def follow_up(cart: Cart, name: str) -> dict[str, Any]:
    """The frame of a follow-up event to the cart's offer."""
    assert cart.offer is not None and name in FOLLOW_UPS, (cart, name)
    if name == "purchase":
        return track(
            name, name, order_id=f"order-{cart.number}", total=100.0, code=cart.offer["code"]
        )
    return track(name, name, offer_id=cart.offer["offer_id"])


async def _receive(ws: Any, deadline: float) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(
        await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
    )
    return frame


async def pause_cart(ws_url: str, cart: Cart, *, then: Sequence[str], within: float) -> Cart:
    deadline = time.monotonic() + within
    try:
        async with websockets.connect(
            f"{ws_url}/ws/collect/?site=demo", open_timeout=within, max_queue=None
        ) as ws:
            welcome = await _receive(ws, deadline)
            assert welcome["type"] == "welcome", welcome
            cart.session, cart.token = welcome["session"], welcome["token"]
            add = track(
                "add", "add_to_cart", product_id=f"sku-{cart.number}", price=100.0, quantity=1
            )
            await ws.send(json.dumps(add))
            acked_at = time.monotonic()
            while cart.offer is None:
                frame = await _receive(ws, deadline)
                if frame["type"] == "ack":
                    cart.acked.update(frame["ids"])
                    acked_at = time.monotonic()
                elif frame["type"] == "offer":
                    cart.offer = frame
                else:
                    raise AssertionError(f"unexpected frame {frame}")
            arrived = time.monotonic()
            cart.offer_after = arrived - acked_at
            for name in then:
                await ws.send(json.dumps(follow_up(cart, name)))
            cart.answered_within = time.monotonic() - arrived
            while not set(then) <= cart.acked:
                frame = await _receive(ws, deadline)
                assert frame["type"] == "ack", frame
                cart.acked.update(frame["ids"])
    except (OSError, TimeoutError, AssertionError, websockets.WebSocketException) as exc:
        cart.error = f"{type(exc).__name__}: {exc}"
    return cart


async def pause_carts_async(
    ws_url: str, count: int, *, then: Sequence[str] = (), within: float = 30.0, first: int = 0
) -> list[Cart]:
    carts = [Cart(first + i) for i in range(count)]
    return list(
        await asyncio.gather(
            *(pause_cart(ws_url, cart, then=then, within=within) for cart in carts)
        )
    )


def pause_carts(
    ws_url: str, count: int, *, then: Sequence[str] = (), within: float = 30.0, first: int = 0
) -> list[Cart]:
    """`count` carts at once, each paused until its offer arrives and answered with `then`."""
    return asyncio.run(pause_carts_async(ws_url, count, then=then, within=within, first=first))


def failures(carts: Sequence[Cart]) -> list[str]:
    return [f"cart {c.number}: {c.error}" for c in carts if c.error]


@dataclass
class Recorded:
    """The record in the database, as plain values."""

    # pause_key -> {session, outcome, converted, code}
    decisions: dict[str, dict[str, Any]]
    # code -> {public_id, session, shown, accepted, dismissed}
    offers: dict[str, dict[str, Any]]
    # {session, offer_id, kind, applied}
    marks: list[dict[str, Any]]
    # {kind, error, pause_key}
    dead: list[dict[str, Any]]
    sessions_decided: dict[str, int]


_READ = """
import json
from django.db.models import Count
from offers.models import DeadRecord, Decision, Mark, Offer
decisions = {
    d.pause_key: {
        "session": d.session,
        "outcome": d.outcome,
        "converted": d.converted_at is not None,
        "code": getattr(getattr(d, "offer", None), "code", None),
    }
    for d in Decision.objects.select_related("offer")
}
offers = {
    o.code: {
        "public_id": o.public_id,
        "session": o.session,
        "shown": o.shown_at is not None,
        "accepted": o.accepted_at is not None,
        "dismissed": o.dismissed_at is not None,
    }
    for o in Offer.objects.all()
}
marks = [
    {"session": m.session, "offer_id": m.offer_public_id, "kind": m.kind, "applied": m.applied}
    for m in Mark.objects.all()
]
dead = [
    {"kind": r.kind, "error": r.error, "pause_key": r.payload.get("pause_key")}
    for r in DeadRecord.objects.all()
]
sessions = dict(Decision.objects.values_list("session").annotate(n=Count("id")))
print(json.dumps([decisions, offers, marks, dead, sessions]))
"""


def read_record(env: dict[str, str]) -> Recorded:
    """Everything the database of `env` holds of the record (one `manage.py shell`)."""
    result = manage("shell", "-v", "0", "-c", _READ, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return Recorded(*json.loads(result.stdout.strip().splitlines()[-1]))


def reconcile(env: dict[str, str]) -> str:
    """`manage.py reconcile` on `env`'s record: asserts it exits 0, returns what it said."""
    result = manage("reconcile", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
