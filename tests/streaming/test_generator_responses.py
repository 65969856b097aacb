"""Generated shoppers' hidden responses to offers (streaming/generator.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from streaming.generator import (
    GeneratedSession,
    Response,
    generate_session,
    generate_sessions,
)


@pytest.fixture(scope="module")
def shoppers() -> list[GeneratedSession]:
    return generate_sessions(6000, seed=21)


def with_carts(sessions: list[GeneratedSession]) -> list[GeneratedSession]:
    return [s for s in sessions if s.persona != "browser"]


def test_a_response_agrees_with_what_the_session_does_without_an_offer(shoppers):
    for session in shoppers:
        assert session.response is not None
        assert session.purchased == (session.response in (Response.SURE_THING, Response.PUT_OFF))
        assert session.buys_with_offer == session.response.buys_with_offer
        assert session.buys(offered=False) == session.purchased
        assert session.buys(offered=True) == session.buys_with_offer


def test_about_27_percent_of_carts_left_behind_would_come_back_for_a_discount(shoppers):
    left = [s for s in with_carts(shoppers) if not s.purchased]
    share = np.mean([s.response == Response.PERSUADABLE for s in left])
    assert 0.25 < share < 0.31


def test_a_few_percent_of_those_who_would_buy_are_put_off(shoppers):
    buyers = [s for s in with_carts(shoppers) if s.purchased]
    share = np.mean([s.response == Response.PUT_OFF for s in buyers])
    assert 0.02 < share < 0.07


def test_an_offer_to_every_cart_lifts_buying_as_coupon_experiments_measured(shoppers):
    carts = with_carts(shoppers)
    without = np.mean([s.purchased for s in carts])
    with_offer = np.mean([s.buys_with_offer for s in carts])
    assert 0.27 < without < 0.33
    assert 1.4 < with_offer / without < 1.8  # within +57% to +157%


def test_responses_are_tied_to_personas_only_as_their_scripts_are(shoppers):
    by_persona: dict[str, Counter[Response]] = {}
    for session in shoppers:
        assert session.response is not None
        by_persona.setdefault(session.persona, Counter())[session.response] += 1
    assert set(by_persona["buyer"]) == {Response.SURE_THING}
    assert set(by_persona["persuadable"]) == {Response.PERSUADABLE}
    assert set(by_persona["browser"]) == {Response.LOST_CAUSE}
    assert set(by_persona["comparer"]) == set(Response)
    assert set(by_persona["abandoner"]) == {Response.LOST_CAUSE, Response.PERSUADABLE}


def test_responses_come_from_their_own_stream_and_leave_the_events_alone():
    first = generate_session(
        np.random.default_rng(5), "abandoner", responses=np.random.default_rng(1)
    )
    second = generate_session(
        np.random.default_rng(5), "abandoner", responses=np.random.default_rng(2)
    )
    assert first.events == second.events and first.purchased == second.purchased
    assert generate_sessions(50, seed=3) == generate_sessions(50, seed=3)


def test_a_session_made_by_hand_gets_its_response_from_its_outcomes():
    assert GeneratedSession("x", [], True, True).response == Response.SURE_THING
    assert GeneratedSession("x", [], False, True).response == Response.PERSUADABLE
    assert GeneratedSession("x", [], False, False).response == Response.LOST_CAUSE
    assert GeneratedSession("x", [], True, False).response == Response.PUT_OFF
