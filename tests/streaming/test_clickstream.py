from __future__ import annotations

from pathlib import Path

import pytest

from streaming.clickstream import ClickSession, read_clickstream, read_otto, replay
from streaming.eventlog import EventLog
from streaming.features import FEATURE_NAMES
from tests.factories import T0, event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HOUR = 3600.0

# REES46's format (its rows are not shipped: these are made up in its shape).
REES46 = """event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
2019-10-01 00:00:00 UTC,view,1,9,,acme,10.00,7,a
2019-10-01 00:00:20 UTC,cart,1,9,,acme,10.00,7,a
2019-10-01 00:02:00 UTC,view,2,9,,acme,30.00,7,a
2019-10-01 00:03:00 UTC,purchase,1,9,,acme,10.00,7,a
2019-10-01 00:00:00 UTC,cart,5,9,,acme,99.50,8,b
2019-10-01 01:00:00 UTC,view,6,9,,acme,5.00,8,b
2019-10-01 01:00:00 UTC,view,6,9,,acme,not a price,8,b
"""


def test_rees46_rows_become_validated_events_by_session(tmp_path: Path):
    path = tmp_path / "rees46.csv"
    path.write_text(REES46)
    read = read_clickstream(path, "rees46")
    assert read.skipped == 1  # the row without a price
    sessions = {s.session_id: s for s in read.sessions}
    assert [e.name for _, e in sessions["a"].events] == [
        "page_view",
        "product_view",
        "add_to_cart",
        "page_view",
        "product_view",
        "purchase",
    ]
    assert sessions["a"].user == "7" and sessions["a"].purchased
    assert not sessions["b"].purchased


def test_a_pause_is_where_a_real_gap_allows_one_and_labelled_by_what_came_next(tmp_path: Path):
    path = tmp_path / "rees46.csv"
    path.write_text(REES46)
    replayed = replay(
        read_clickstream(path, "rees46").sessions, pause_seconds=30, outcome_window=HOUR
    )
    # a: added at 0:20, gaps of 100 s and 60 s, bought at 3:00 (within the hour): two pauses,
    # neither abandoned; b: added at 0:00, nothing for an hour: a pause then, and one at the end
    assert [(p.session_id, p.at - replayed.pauses[0].at, p.abandoned) for p in replayed.pauses] == [
        ("a", 0.0, False),
        ("a", 100.0, False),
        ("b", -20.0, True),
        ("b", 3600.0 - 20.0, True),
    ]
    cart_value = FEATURE_NAMES.index("cart_value")
    assert replayed.X[:, cart_value].tolist() == [10.0, 10.0, 99.5, 99.5]
    assert replayed.y.tolist() == [0.0, 0.0, 1.0, 1.0]
    # within a shorter window the purchase comes too late: abandoned
    late = replay(read_clickstream(path, "rees46").sessions, pause_seconds=30, outcome_window=60)
    assert late.y.tolist()[0] == 1.0


def test_otto_sessions_replay_with_its_carts_and_orders():
    read = read_otto(FIXTURES / "otto" / "sessions.jsonl")
    assert len(read.sessions) == 20 and read.skipped == 0
    replayed = replay(read.sessions, pause_seconds=30, outcome_window=1800)
    assert len(replayed) == 52 and 0 < replayed.y.sum() < len(replayed)


def test_the_generic_csv_takes_a_shop_s_own_history(tmp_path: Path):
    path = tmp_path / "events.csv"
    path.write_text(
        "session,time,event,product,price\n"
        "s1,2026-11-30T10:00:00Z,product_view,sku-1,20\n"
        "s1,2026-11-30T10:00:05Z,add_to_cart,sku-1,20\n"
        "s1,1796033100,search,lamp,\n"
        "s1,2026-11-30T10:06:00Z,purchase,,20\n"
        "s1,2026-11-30T10:07:00Z,teleport,,\n"
    )
    read = read_clickstream(path, "events")
    assert read.skipped == 1
    [session] = read.sessions
    assert [e.name for _, e in session.events] == [
        "page_view",
        "product_view",
        "add_to_cart",
        "search",
        "purchase",
    ]
    with pytest.raises(ValueError, match="unknown clickstream format"):
        read_clickstream(path, "parquet")


def test_the_event_log_replays_like_any_clickstream(tmp_path: Path):
    log = EventLog(tmp_path, days=30, name="one")
    log.append("s", "demo", T0, [event("e-1", "add_to_cart", product_id="p", price=40)])
    log.append("s", "demo", T0 + 100, [event("e-2", "purchase")])
    log.flush()
    [session] = read_clickstream(tmp_path, "log").sessions
    assert isinstance(session, ClickSession) and session.site == "demo"
    replayed = replay([session], pause_seconds=30, outcome_window=1800)
    assert [(p.at, p.abandoned) for p in replayed.pauses] == [(T0 + 30, False)]
