from __future__ import annotations

import gzip
from pathlib import Path

from streaming.eventlog import EventLog, forget_session, log_files, read_log, sessions_of
from tests.factories import T0, event

DAY = 86400.0


def test_applied_events_come_back_validated_with_their_receive_time(tmp_path: Path):
    log = EventLog(tmp_path, days=30, name="one")
    add = event("e-1", "add_to_cart", product_id="sku-1", price=12.5, quantity=2)
    view = event("e-2", "page_view", url="/p/1")
    log.append("s-1", "demo", T0, [add, view])
    log.append("s-2", "demo", T0 + 1, [event("e-1", "search", query="lamp")])
    assert log.waiting() == 2 and log.flush() == 3 and log.waiting() == 0
    log.append("s-1", "demo", T0 + 2, [event("e-3", "purchase", order_id="o-1", total=25.0)])
    assert log.flush() == 1  # appended to the same file
    logged = list(read_log(tmp_path))
    assert [(e.at, e.session, e.event.name) for e in logged] == [
        (T0, "s-1", "add_to_cart"),
        (T0, "s-1", "page_view"),
        (T0 + 1, "s-2", "search"),
        (T0 + 2, "s-1", "purchase"),
    ]
    assert logged[0].event == add and logged[0].site == "demo"
    assert [e.event.id for e in sessions_of(logged)["s-1"]] == ["e-1", "e-2", "e-3"]


def test_days_rotate_are_compressed_once_over_and_go_after_the_retention(tmp_path: Path):
    log = EventLog(tmp_path, days=2, name="one")
    for day in range(4):
        log.append("s", "demo", T0 + day * DAY, [event(f"e-{day}", "page_view", url="/")])
    log.flush()
    assert len(log_files(tmp_path)) == 4
    # the days before the last are over: gzipped, and read as before
    assert log.compress_days(T0 + 3 * DAY) == 3
    assert sorted(p.name for p in log_files(tmp_path)) == ["one.jsonl"] + ["one.jsonl.gz"] * 3
    assert [e.event.id for e in read_log(tmp_path)] == ["e-0", "e-1", "e-2", "e-3"]
    log.append("s", "demo", T0 + DAY, [event("late", "page_view", url="/")])
    log.flush()  # a late event of a compressed day: a plain file beside it, compressed later
    assert log.compress_days(T0 + 3 * DAY) == 1
    assert [e.event.id for e in read_log(tmp_path, since=T0 + DAY, until=T0 + 2 * DAY)] == [
        "e-1",
        "late",
    ]
    assert len(log_files(tmp_path, since=T0 + 2 * DAY)) == 2
    assert log.prune(T0 + 3 * DAY) == 1  # older than two days before the last
    assert [e.event.id for e in read_log(tmp_path)] == ["e-1", "late", "e-2", "e-3"]


def test_a_session_is_forgotten_from_every_file(tmp_path: Path):
    first, second = EventLog(tmp_path, days=30, name="a"), EventLog(tmp_path, days=30, name="b")
    first.append("gone", "demo", T0, [event("e-1", "page_view", url="/")])
    first.append("kept", "demo", T0, [event("e-1", "page_view", url="/")])
    second.append(
        "gone",
        "demo",
        T0 + DAY,
        [event("e-2", "page_view", url="/"), event("e-4", "search", query="shoes")],
    )
    first.flush(), second.flush()
    second.compress_days(T0 + 3 * DAY)  # one file plain, the other compressed
    assert forget_session(tmp_path, "gone") == 3  # events, a frame of two counting two
    assert [e.session for e in read_log(tmp_path)] == ["kept"]
    first.append("kept", "demo", T0, [event("e-3", "page_view", url="/")])
    first.flush()  # the rewritten file takes appends as before
    assert [e.event.id for e in read_log(tmp_path)] == ["e-1", "e-3"]
    text = b"".join(
        gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for path in log_files(tmp_path)
    )
    assert b"gone" not in text and b"token" not in text
