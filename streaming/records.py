"""What goes into the record: decisions with their offers, their reasons, and what shoppers did.

Plain dataclasses, encoded with msgpack (never pickle) as `[kind, fields]` for the journal that
carries them to the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from streaming.policy import Outcome


@dataclass(slots=True)
class OfferMade:
    offer_id: str
    code: str
    rule_id: int | None
    title: str
    message: str
    discount_percent: int
    created_at: float
    expires_at: float


@dataclass(slots=True)
class DecisionMade:
    session_id: str
    site: str
    pause_key: str
    deadline: float
    at: float
    outcome: Outcome
    risk: float | None
    shadow_risk: float | None
    model: str
    shadow_model: str
    features: dict[str, float]
    cart_value: float
    offer: OfferMade | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    # When the offer frame went out (wall clock), for the deadline-to-offer delay.
    sent_at: float | None = None
    # The rule of an offer or a holdout: whose daily budget it spent.
    rule_id: int | None = None
    # Why the policy decided so, in words ("risk 0.47 below the rule's 0.60"); "" in records
    # written before it was kept.
    why: str = ""


@dataclass(slots=True)
class ReasonsMade:
    """The reasons of a decision recorded before they were worked out."""

    pause_key: str
    reasons: list[dict[str, Any]]


@dataclass(slots=True)
class MarkMade:
    """What a shopper did after a decision: saw, took or closed an offer, or bought."""

    session_id: str
    offer_id: str | None
    kind: str  # offer_shown, offer_accepted, offer_dismissed, purchase
    at: float
    # A purchase's order id, what was paid and the offer code used, when the shop says.
    order_id: str = ""
    total: float | None = None
    code: str = ""


Record = DecisionMade | ReasonsMade | MarkMade

_KIND_OF: Final[dict[type, str]] = {
    DecisionMade: "decision",
    ReasonsMade: "reasons",
    MarkMade: "mark",
}
_TYPE_OF: Final[dict[str, type]] = {kind: cls for cls, kind in _KIND_OF.items()}
_encoder = msgspec.msgpack.Encoder()
_envelope = msgspec.msgpack.Decoder(tuple[str, msgspec.Raw])
_decoders: Final[dict[str, msgspec.msgpack.Decoder[Any]]] = {
    kind: msgspec.msgpack.Decoder(cls) for kind, cls in _TYPE_OF.items()
}


class RecordError(ValueError):
    """Bytes that are not a record (a journal written by something else, or damaged)."""


def kind_of(record: Record) -> str:
    return _KIND_OF[type(record)]


def encode(record: Record) -> bytes:
    return _encoder.encode((kind_of(record), record))


def decode(data: bytes) -> Record:
    try:
        kind, fields = _envelope.decode(data)
        decoder = _decoders.get(kind)
        if decoder is None:
            raise RecordError(f"unknown record kind {kind!r}")
        record: Record = decoder.decode(fields)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordError(str(exc)) from exc
    return record


def as_json(record: Record) -> dict[str, Any]:
    """The record as JSON-ready fields, for the dead-letter table."""
    fields: dict[str, Any] = msgspec.to_builtins(record)
    return {"kind": kind_of(record), **fields}
