from __future__ import annotations

from streaming.timers import PauseTimers
from tests.factories import T0


def test_it_hands_out_sessions_whose_deadline_has_passed_oldest_first():
    timers = PauseTimers()
    deadlines = {"a": T0 + 30, "b": T0 + 10, "c": T0 + 50}
    for session_id, deadline in deadlines.items():
        timers.schedule(session_id, deadline)
    assert timers.pop_due(T0 + 5, deadlines.get, 100) == []
    assert timers.pop_due(T0 + 30, deadlines.get, 100) == ["b", "a"]
    assert timers.pop_due(T0 + 100, deadlines.get, 100) == ["c"]
    assert len(timers) == 0


def test_a_deadline_moved_later_is_looked_at_again_then():
    timers = PauseTimers()
    deadlines: dict[str, float | None] = {"a": T0 + 30}
    timers.schedule("a", deadlines["a"])
    deadlines["a"] = T0 + 45  # the shopper did something at T0 + 15
    timers.schedule("a", deadlines["a"])  # already queued: no second entry
    assert len(timers) == 1
    assert timers.pop_due(T0 + 31, deadlines.get, 100) == []
    assert timers.next_deadline() == T0 + 45
    assert timers.pop_due(T0 + 45, deadlines.get, 100) == ["a"]


def test_a_session_that_no_longer_pauses_is_dropped():
    timers = PauseTimers()
    timers.schedule("bought", T0 + 30)
    assert timers.pop_due(T0 + 31, lambda _session_id: None, 100) == []
    assert len(timers) == 0


def test_it_hands_out_at_most_the_limit_and_keeps_the_rest():
    timers = PauseTimers()
    deadlines = {f"s{i}": T0 + i for i in range(10)}
    for session_id, deadline in deadlines.items():
        timers.schedule(session_id, deadline)
    assert timers.pop_due(T0 + 100, deadlines.get, 4) == ["s0", "s1", "s2", "s3"]
    assert timers.pop_due(T0 + 100, deadlines.get, 100) == [f"s{i}" for i in range(4, 10)]


def test_a_tick_looks_only_at_sessions_that_are_due():
    timers = PauseTimers()
    looked_at: list[str] = []

    def deadline_of(session_id: str) -> float:
        looked_at.append(session_id)
        return T0 + 1000 + int(session_id)

    for i in range(100_000):
        timers.schedule(str(i), T0 + 1000 + i)
    assert timers.pop_due(T0 + 1004, deadline_of, 10_000) == ["0", "1", "2", "3", "4"]
    assert looked_at == ["0", "1", "2", "3", "4"]
