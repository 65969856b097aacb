"""Where live session state lives.

`SessionStore` is the seam: the collector only talks to it, so the in-memory store of embedded
mode and a Redis store share one consumer. Every call takes the receive time `now` from the
caller, which keeps stores testable with a fixed clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from streaming.protocol import OFFER_EVENTS, Event, OfferRef, ProtocolError
from streaming.state import CartFull, SessionState
from streaming.timers import PauseTimers

if TYPE_CHECKING:
    from streaming.journal import Journal
    from streaming.records import DecisionMade


@dataclass(slots=True)
class Applied:
    """What became of a run of events: ids to acknowledge, and errors for the others."""

    acked: list[str] = field(default_factory=list)
    duplicates: int = 0
    errors: list[ProtocolError] = field(default_factory=list)
    # Events applied now for the first time (duplicates excluded), in order.
    fresh: list[Event] = field(default_factory=list)
    # Events seen before, acknowledged again.
    repeated: list[Event] = field(default_factory=list)
    # The session's offer (its last: a session keeps only its latest offer's id), read only
    # when the events include OFFER_EVENTS.
    offer_id: str | None = None

    def names_another_offer(self, event: Event) -> bool:
        """An offer event whose offer is not the session's: to acknowledge and ignore."""
        props = event.props
        return (
            event.name in OFFER_EVENTS
            and isinstance(props, OfferRef)
            and props.offer_id != self.offer_id
        )


def has_offer_events(events: Sequence[Event]) -> bool:
    return any(event.name in OFFER_EVENTS for event in events)


@dataclass(frozen=True, slots=True)
class OfferNote:
    """An offer (or, without a frame, a holdout) to note on its session: `note_offer`'s arguments."""

    session_id: str
    at: float
    offer_id: str | None = None
    frame: str | None = None
    expires_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Settled:
    """A decision to store with its pause (`activity_seq` when claimed), and, for an offer or a
    holdout, what to note on its session."""

    decision: DecisionMade
    seq: int
    note: OfferNote | None
    # An offer frame is to be sent: the pause stays leased until `release` (Redis mode).
    sends: bool = False


# Live sessions and carts at risk on the dashboard: sessions that sent an event within this many
# pauses, so that the figures fall to 0 soon after traffic stops.
LIVE_PAUSES: Final = 10


class SessionStore(ABC):
    idle_seconds: float
    pause_seconds: float

    @abstractmethod
    async def open(self, *, session_id: str, site: str, now: float) -> SessionState:
        """The session's state, created empty when it is new or was evicted."""

    @abstractmethod
    async def apply(
        self, *, session_id: str, site: str, events: Sequence[Event], now: float
    ) -> Applied:
        """Apply events in order; an id seen before is acknowledged again, applied once."""

    @abstractmethod
    async def get(self, session_id: str) -> SessionState | None: ...

    @abstractmethod
    async def evict_idle(self, now: float) -> int:
        """Forget sessions idle for `idle_seconds`; returns how many went."""

    @abstractmethod
    async def claim_due(self, now: float, limit: int) -> list[SessionState]:
        """Sessions whose pause deadline has passed, each pause handed out exactly once."""

    @abstractmethod
    async def note_offer(
        self,
        session_id: str,
        *,
        at: float,
        offer_id: str | None = None,
        frame: str | None = None,
        expires_at: float = 0.0,
    ) -> None:
        """Record that the session got an offer (or a holdout decision, without a frame)."""

    async def note_offers(self, notes: Sequence[OfferNote]) -> None:
        """`note_offer` for each of a batch's offers and holdouts (a shared store: at once)."""
        for note in notes:
            await self.note_offer(
                note.session_id,
                at=note.at,
                offer_id=note.offer_id,
                frame=note.frame,
                expires_at=note.expires_at,
            )

    async def settle(self, settled: Sequence[Settled], journal: Journal) -> list[bool]:
        """Store a batch's decisions with their pauses: each into the journal, its offer or
        holdout noted on its session, its pause done for good. Returns, for each, whether it was
        stored: only those may be sent (False: the pause went to another worker meanwhile)."""
        await self.note_offers([s.note for s in settled if s.note is not None])
        await journal.append([s.decision for s in settled])
        return [True] * len(settled)

    async def release(self, sent: Sequence[Settled]) -> None:  # noqa: B027
        """The offers of these stored decisions were sent: their pauses are done with.

        A store that ends a pause when it is stored has nothing more to do."""

    @property
    def live_seconds(self) -> float:
        """The window of `live_counts`: LIVE_PAUSES pauses."""
        return LIVE_PAUSES * self.pause_seconds

    @abstractmethod
    async def refresh_counts(self, now: float) -> None:
        """Work out what `live_counts` answers (about once a second)."""

    @abstractmethod
    def live_counts(self) -> tuple[int, int]:
        """(sessions, carts at risk) that sent an event within `live_seconds`, as of the last
        `refresh_counts`: what the dashboard shows as live."""

    def next_deadline(self) -> float | None:
        """The earliest pause deadline that may be due (possibly stale, never late)."""
        return None

    @abstractmethod
    def open_carts(self) -> int:
        """Live sessions with a cart that is not empty and not bought: carts at risk."""

    @abstractmethod
    def __len__(self) -> int: ...


class MemoryStore(SessionStore):
    """Embedded mode: sessions in one dict, kept in order of last use so eviction is cheap."""

    def __init__(
        self,
        *,
        idle_seconds: float = 1800.0,
        pause_seconds: float = 30.0,
        max_sessions: int = 1_000_000,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.pause_seconds = pause_seconds
        # Past this many live sessions the least recently active one is forgotten first.
        self.max_sessions = max_sessions
        self.forgotten_full = 0
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self._timers = PauseTimers()
        self._open_carts = 0
        self._live_counts = (0, 0)

    def __len__(self) -> int:
        return len(self._sessions)

    async def open(self, *, session_id: str, site: str, now: float) -> SessionState:
        return self._touch(session_id, site, now)

    async def get(self, session_id: str) -> SessionState | None:
        return self._sessions.get(session_id)

    async def apply(
        self, *, session_id: str, site: str, events: Sequence[Event], now: float
    ) -> Applied:
        state = self._touch(session_id, site, now)
        was_open = state.cart_open
        result = Applied()
        for event in events:
            if state.has_seen(event.id):
                result.duplicates += 1
                result.repeated.append(event)
            else:
                try:
                    state.apply(event, now)
                except CartFull as exc:
                    result.errors.append(ProtocolError("invalid_props", str(exc), event.id))
                    continue
                state.remember(event.id)
                result.fresh.append(event)
            result.acked.append(event.id)
        self._timers.schedule(session_id, state.pause_deadline(self.pause_seconds))
        self._open_carts += state.cart_open - was_open
        if has_offer_events(events):
            result.offer_id = state.offer_id
        return result

    def open_carts(self) -> int:
        return self._open_carts

    async def refresh_counts(self, now: float) -> None:
        # Newest first (the dict is in order of last use), down to the first one out of the window.
        since = now - self.live_seconds
        live = carts = 0
        for state in reversed(self._sessions.values()):
            if state.last_seen < since:
                break
            live += 1
            carts += state.cart_open
        self._live_counts = (live, carts)

    def live_counts(self) -> tuple[int, int]:
        return self._live_counts

    async def claim_due(self, now: float, limit: int) -> list[SessionState]:
        claimed = []
        for session_id in self._timers.pop_due(now, self._deadline_of, limit):
            state = self._sessions[session_id]
            state.decided_seq = state.activity_seq
            claimed.append(state)
        return claimed

    async def note_offer(
        self,
        session_id: str,
        *,
        at: float,
        offer_id: str | None = None,
        frame: str | None = None,
        expires_at: float = 0.0,
    ) -> None:
        state = self._sessions.get(session_id)
        if state is None:
            return
        state.last_offer_at = at
        if frame is not None:
            state.offer_frame, state.offer_id, state.offer_expires_at = frame, offer_id, expires_at

    def next_deadline(self) -> float | None:
        """The earliest pause deadline that may be due (possibly stale, never late)."""
        return self._timers.next_deadline()

    def _deadline_of(self, session_id: str) -> float | None:
        state = self._sessions.get(session_id)
        return None if state is None else state.pause_deadline(self.pause_seconds)

    async def evict_idle(self, now: float) -> int:
        # Sessions are ordered by last use, so the idle ones are all at the front.
        evicted = 0
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if oldest.idle_until(self.idle_seconds) > now:
                break
            _, gone = sessions.popitem(last=False)
            self._open_carts -= gone.cart_open
            evicted += 1
        return evicted

    def _touch(self, session_id: str, site: str, now: float) -> SessionState:
        state = self._sessions.get(session_id)
        if state is None or state.site != site:
            if state is not None:
                self._open_carts -= state.cart_open
            state = SessionState(session_id, site, started_at=now, last_seen=now, last_activity=now)
            self._sessions[session_id] = state
            if len(self._sessions) > self.max_sessions:
                _, gone = self._sessions.popitem(last=False)
                self._open_carts -= gone.cart_open
                self.forgotten_full += 1
        else:
            state.last_seen = max(state.last_seen, now)
            self._sessions.move_to_end(session_id)
        return state
