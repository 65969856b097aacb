"""Pause timers: which sessions' pause deadlines have passed.

A heap of (deadline, session) with at most one entry a session. A deadline only ever moves later
(activity pushes it back), so an entry popped early is pushed again at the session's current
deadline; the cost of a tick depends on the sessions that are due, not on all live sessions.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


class PauseTimers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._queued: set[str] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, session_id: str, deadline: float | None) -> None:
        """Make sure the session is looked at no later than `deadline`."""
        if deadline is not None and session_id not in self._queued:
            heapq.heappush(self._heap, (deadline, session_id))
            self._queued.add(session_id)

    def pop_due(
        self, now: float, deadline_of: Callable[[str], float | None], limit: int
    ) -> list[str]:
        """Sessions whose current deadline is at or before `now`, at most `limit`, oldest first.

        `deadline_of` gives a session's current deadline, or None when it no longer pauses.
        """
        due: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(due) < limit:
            _, session_id = heapq.heappop(heap)
            self._queued.discard(session_id)
            deadline = deadline_of(session_id)
            if deadline is None:
                continue
            if deadline > now:
                self.schedule(session_id, deadline)
            else:
                due.append(session_id)
        return due

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None
