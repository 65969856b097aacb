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

from streaming.protocol import Event, ProtocolError
from streaming.state import CartFull, SessionState


@dataclass(slots=True)
class Applied:
    """What became of a run of events: ids to acknowledge, and errors for the others."""

    acked: list[str] = field(default_factory=list)
    duplicates: int = 0
    errors: list[ProtocolError] = field(default_factory=list)


class SessionStore(ABC):
    idle_seconds: float

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
    def __len__(self) -> int: ...


class MemoryStore(SessionStore):
    """Embedded mode: sessions in one dict, kept in order of last use so eviction is cheap."""

    def __init__(self, *, idle_seconds: float = 1800.0) -> None:
        self.idle_seconds = idle_seconds
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()

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
        result = Applied()
        for event in events:
            if state.has_seen(event.id):
                result.duplicates += 1
            else:
                try:
                    state.apply(event, now)
                except CartFull as exc:
                    result.errors.append(ProtocolError("invalid_props", str(exc), event.id))
                    continue
                state.remember(event.id)
            result.acked.append(event.id)
        return result

    async def evict_idle(self, now: float) -> int:
        return self.evict_idle_now(now)

    def evict_idle_now(self, now: float) -> int:
        # Sessions are ordered by last use, so the idle ones are all at the front.
        evicted = 0
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if oldest.idle_until(self.idle_seconds) > now:
                break
            sessions.popitem(last=False)
            evicted += 1
        return evicted

    def _touch(self, session_id: str, site: str, now: float) -> SessionState:
        state = self._sessions.get(session_id)
        if state is None or state.site != site:
            state = SessionState(session_id, site, started_at=now, last_seen=now, last_activity=now)
            self._sessions[session_id] = state
        else:
            state.last_seen = max(state.last_seen, now)
            self._sessions.move_to_end(session_id)
        return state
