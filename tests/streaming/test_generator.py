from __future__ import annotations

import json

import numpy as np
import pytest

from streaming.generator import (
    CATALOGUE,
    CATEGORIES,
    PAUSE_SECONDS,
    PERSONAS,
    GeneratedSession,
    generate_session,
    generate_sessions,
    iter_frames,
)
from streaming.protocol import EVENT_KINDS, Event, decode_frame
from tests.factories import T0

PER_PERSONA = 200


@pytest.fixture(scope="module")
def sessions_of() -> dict[str, list[GeneratedSession]]:
    rng = np.random.default_rng(11)
    return {
        persona: [generate_session(rng, persona) for _ in range(PER_PERSONA)]
        for persona in PERSONAS
    }


def names(session: GeneratedSession) -> list[str]:
    return [str(e.frame["event"]) for e in session.events]


def activity_times(session: GeneratedSession) -> list[tuple[float, str]]:
    return [
        (e.at, str(e.frame["event"]))
        for e in session.events
        if EVENT_KINDS[str(e.frame["event"])].activity
    ]


def cart_value(session: GeneratedSession) -> float:
    total = 0.0
    for e in session.events:
        props = e.frame["props"]
        assert isinstance(props, dict)
        if e.frame["event"] == "add_to_cart":
            total += props["price"] * props["quantity"]
    return total


def test_a_seed_repeats_the_same_sessions():
    assert generate_sessions(100, seed=5) == generate_sessions(100, seed=5)
    assert generate_sessions(100, seed=5) != generate_sessions(100, seed=6)


def test_every_generated_event_passes_the_protocols_validation(sessions_of):
    for sessions in sessions_of.values():
        for session in sessions:
            timed = session.timed_events(T0)
            assert len(timed) == len(session.events)
            assert [at for at, _ in timed] == [T0 + e.at for e in session.events]


def test_every_track_frame_decodes_as_the_socket_would(sessions_of):
    for sessions in sessions_of.values():
        for at, frame in iter_frames(sessions[0]):
            (item,) = decode_frame(json.dumps(frame))
            assert isinstance(item, Event), item
            assert at >= 0


def test_event_ids_are_unique_and_times_never_go_back(sessions_of):
    for sessions in sessions_of.values():
        for session in sessions:
            ids = [e.frame["id"] for e in session.events]
            assert len(set(ids)) == len(ids)
            times = [e.at for e in session.events]
            assert times == sorted(times)


def test_browsers_never_add_to_cart(sessions_of):
    for session in sessions_of["browser"]:
        assert "add_to_cart" not in names(session)
        assert not session.purchased


def test_buyers_add_then_purchase(sessions_of):
    for session in sessions_of["buyer"]:
        events = names(session)
        assert session.purchased and session.buys_with_offer
        assert events.index("add_to_cart") < events.index("checkout_start")
        assert events.index("checkout_start") < events.index("purchase")


def test_buyers_are_quick_for_the_most_part(sessions_of):
    durations = [session.duration for session in sessions_of["buyer"]]
    assert np.median(durations) < 3 * 60


def test_abandoners_add_and_never_purchase(sessions_of):
    hidden = 0
    for session in sessions_of["abandoner"]:
        events = names(session)
        assert "add_to_cart" in events
        assert "purchase" not in events and not session.purchased
        hidden += events[-1] == "visibility"
    assert hidden > PER_PERSONA / 2  # often leave with the tab hidden


def test_comparers_pause_and_come_back(sessions_of):
    for session in sessions_of["comparer"]:
        activity = activity_times(session)
        first_add = next(at for at, name in activity if name == "add_to_cart")
        after_add = [at for at, _ in activity if at >= first_add]
        # A gap lies between two activity events: the shopper came back after it.
        assert np.diff(after_add).max() >= PAUSE_SECONDS
    bought = sum(session.purchased for session in sessions_of["comparer"])
    # mostly leave, as carts browsed on after the add do (streaming/calibration.py)
    assert 0.1 * PER_PERSONA < bought < 0.45 * PER_PERSONA


def test_comparers_look_at_other_products_after_adding(sessions_of):
    for session in sessions_of["comparer"]:
        events = names(session)
        after_add = events[events.index("add_to_cart") :]
        assert after_add.count("product_view") >= 3


def test_persuadables_leave_but_would_buy_with_an_offer(sessions_of):
    for session in sessions_of["persuadable"]:
        assert "add_to_cart" in names(session)
        assert not session.purchased
        assert session.buys_with_offer


def test_cart_values_differ_by_persona(sessions_of):
    mean = {p: np.mean([cart_value(s) for s in sessions_of[p]]) for p in PERSONAS}
    assert mean["browser"] == 0
    assert mean["buyer"] < mean["abandoner"] < mean["comparer"]


def test_the_mix_decides_who_shops():
    sessions = generate_sessions(50, seed=1, mix={"buyer": 3.0, "browser": 0.0})
    assert {session.persona for session in sessions} == {"buyer"}


def test_an_unknown_persona_in_the_mix_is_refused():
    with pytest.raises(ValueError, match="unknown personas: shoplifter"):
        generate_sessions(5, seed=1, mix={"shoplifter": 1.0})


def test_the_default_mix_has_every_persona():
    personas = {session.persona for session in generate_sessions(300, seed=2)}
    assert personas == set(PERSONAS)


def test_the_catalogue_has_about_forty_products_in_several_categories():
    assert 35 <= len(CATALOGUE) <= 45
    assert len(CATEGORIES) >= 4
    assert len({product.sku for product in CATALOGUE}) == len(CATALOGUE)
    assert min(p.price for p in CATALOGUE) < 20 < 300 < max(p.price for p in CATALOGUE)


def test_progress_is_reported_up_to_the_last_session():
    calls: list[tuple[int, int]] = []
    generate_sessions(2500, seed=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1000, 2500), (2000, 2500), (2500, 2500)]
