"""`bench redis`: its smallest run on the machine's Redis and PostgreSQL, and its table."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from io import StringIO

import pytest
import redis
from django.core.management import call_command

from benchmarks import decisions
from benchmarks.decisions import Recorded
from benchmarks.management.commands.bench import BENCHMARKS, NAMED_ONLY
from benchmarks.redis.capacity import LoadRun, measure_load, replies_in
from benchmarks.redis.figures import DecisionRun, IngestRun, RedisMemory, RedisReport
from benchmarks.redis.frames import FrameCost
from streaming.redis_store import _APPLY_LUA
from tests.conftest import service_missing

# Not the bench's default (13) nor the other tests' (14, 15): runs may share the machine.
REDIS_URL = "redis://127.0.0.1:6379/12"


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def databases(prefix: str) -> set[str]:
    listed = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SELECT datname FROM pg_database"],
        check=True,
        capture_output=True,
        text=True,
    )
    return {name for name in listed.stdout.split() if name.startswith(prefix)}


@pytest.mark.e2e
@pytest.mark.services
def test_the_smallest_run_counts_events_offers_every_cart_once_and_weighs_a_session(tmp_path):
    if not answers(6379):
        service_missing("Redis at 127.0.0.1:6379")
    if not answers(5432):
        service_missing("PostgreSQL at 127.0.0.1:5432")
    out, err = StringIO(), StringIO()
    call_command(
        "bench",
        "redis",
        f"--redis-url={REDIS_URL}",
        "--seconds=0.3",
        "--connections=2",
        "--front-ends=1",
        "--workers=1",
        "--carts=20",
        "--pause-seconds=0.5",
        "--window=0.1",
        "--sessions=300",
        "--frames=200",
        "--offered=400",
        "--load-seconds=0.25",
        f"--json={tmp_path / 'redis.json'}",
        stdout=out,
        stderr=err,
    )
    figures = json.loads((tmp_path / "redis.json").read_text())

    ingest = {(run["mode"], run["front_ends"], run["frames"]): run for run in figures["ingest"]}
    assert set(ingest) == {
        (mode, 1, frames) for mode in ("embedded", "redis") for frames in ("single", "batch of 20")
    }
    for run in ingest.values():
        assert run["events_per_second"] > 0
        assert run["front_ends_busy"] > 0 and run["events_per_front_end_core"] > 0
    assert ingest[("redis", 1, "single")]["redis_busy"] > 0
    assert ingest[("redis", 1, "single")]["redis_us_per_event"] > 0

    assert [(run["mode"], run["workers"]) for run in figures["decisions"]] == [
        ("embedded", 0),
        ("redis", 1),
    ]
    for run in figures["decisions"]:
        assert run["every_cart_one_offer"], run
        assert run["round"]["on_time"] == run["recorded"]["offer_rows"] == 20
        assert run["recorded"]["per_second"] > 0
        assert 0 <= run["recorded"]["after_last"] <= run["recorded"]["recorded_after"]
        assert run["decider_us_per_decision"] > 0

    # Each layout's apply script took the same 200 single-event frames at each depth; Redis
    # read a pipeline of 64 in fewer reads than it read lone frames.
    frames = {(cost["layout"], cost["per_request"]): cost for cost in figures["frames"]}
    assert set(frames) == {
        (layout, depth) for layout in ("hash (before)", "packed (now)") for depth in (1, 8, 64)
    }
    for cost in frames.values():
        assert cost["frames"] == 200 and cost["redis_us_per_frame"] > 0 and cost["script_usec"] > 0
    for layout in ("hash (before)", "packed (now)"):
        assert frames[(layout, 1)]["requests_read"] >= 200 > frames[(layout, 64)]["requests_read"]

    # Each layout carried the 100 frames offered, every one answered without an error, in at
    # most one request a frame.
    capacity = {(run["layout"], run["offered"]): run for run in figures["capacity"]}
    assert set(capacity) == {("hash (before)", 400), ("packed (now)", 400)}
    for run in capacity.values():
        assert run["frames"] == 100 and run["errors"] == 0
        assert 1 <= run["requests"] <= 100 and run["frames_per_request"] >= 1
        assert run["redis_us_per_frame"] > 0 and run["carried"] > 0
        assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]

    memory = figures["memory"]
    assert memory["sessions"] == 300 and memory["events_per_session"] >= 15
    # A packed state and three sorted-set entries: hundreds of bytes, not kilobytes. (INFO
    # used_memory is the whole server's: other tests' databases move it, MEMORY USAGE not.)
    assert 200 < memory["key_bytes_per_session"] < 2_048
    assert set(memory["key_bytes"]) == {"session", "pauses", "live", "carts"}
    assert 100 < memory["offer_key_bytes"] / 300 < 2_048
    assert figures["embedded_memory"]["sessions"] == 300

    table = out.getvalue()
    assert table.startswith("redis mode (Redis ")
    assert "memory (Redis, 300 live sessions" in table
    # Nothing is left behind: the Redis database is empty, the PostgreSQL database dropped.
    assert redis.Redis.from_url(REDIS_URL).dbsize() == 0
    (created,) = re.findall(r"the database (liveoffers_bench_\w+) ", err.getvalue())
    assert created not in databases("liveoffers_bench_")


def test_it_runs_only_when_named_so_that_bench_all_needs_no_services():
    assert "redis" in NAMED_ONLY
    assert "redis" not in BENCHMARKS


def test_the_table_sets_redis_mode_beside_embedded_mode():
    spread = decisions.Spread(3.0, 5.0, 9.0, 12.0)
    report = RedisReport(
        seconds=5,
        connections=8,
        carts=2_000,
        pause_seconds=1.0,
        window=0.5,
        services={"Redis": "7.0.15 at 127.0.0.1:6379/13", "PostgreSQL": "15.2"},
        decisions_placement="server on core 0, client on core 1, workers not pinned",
        load_average={"at the start": 0.5},
    )
    report.ingest = [
        IngestRun("embedded", 1, "single", 10_000.0, 1.0, 0.5, 0.0, 0.0),
        IngestRun("redis", 1, "single", 4_000.0, 0.8, 0.3, 0.4, 0.1, frames_per_redis_read=2.5),
    ]
    measured = decisions.Round(
        "redis", 2_000, 1.0, 2_000, 2_000, 2_000, spread, spread, spread, 500.0, spread, 0.1
    )
    report.decisions = [
        DecisionRun(
            "redis",
            2,
            measured,
            Recorded(2_000, 2_000, 2_000, 2_000, 0.4, 1.25),
            others_busy=0.25,
            deciders_cpu_seconds=0.5,
        )
    ]
    report.memory = RedisMemory(
        sessions=1_000,
        events_per_session=17,
        used_memory=900_000,
        key_bytes={"session": 500_000, "pauses": 100_000, "live": 100_000, "carts": 100_000},
        offer_used_memory=400_000,
        offer_key_bytes=300_000,
        offer_state_bytes=80_000,
    )
    report.frames = [FrameCost("packed (now)", 8, 20_000, 0.5, 20.0, 2_500)]
    report.capacity = [LoadRun("packed (now)", 25_000, 8, 75_000, 3.0, 2.4, 0.9, 25_000, 0, spread)]
    lines = report.table().splitlines()
    # Redis CPU a frame, the script's share, frames a read, frames a second of one Redis core
    frame_row = next(line for line in lines if line.startswith("packed (now)")).split()
    assert frame_row[2:] == ["8", "25.0", "20.0", "8.0", "40,000"]
    # carried 75,000 frames in 3 s; Redis 2.4 s of CPU: 80% of a core, 32 µs a frame
    capacity_row = next(line for line in lines if line.startswith("packed (now)") and "%" in line)
    assert capacity_row.split()[2:] == [
        *("25,000", "25,000", "80%", "32.0", "3.0", "3.0", "9.0", "12.0", "30%")
    ]
    redis_row = next(
        line.split() for line in lines if line.startswith("redis ") and "single" in line
    )
    # events/s, x embedded, front ends, client, redis, others, per front-end core, redis µs/event,
    # frames a Redis read
    assert redis_row[3:] == ["4,000", "0.40x", "80%", "30%", "40%", "10%", "5,000", "100.0", "2.5"]
    decision_row = next(
        line.split() for line in lines if line.startswith("redis ") and "2,000" in line
    )
    # due/s: 2,000 carts over 0.5 s; decided/s: over 0.4 s; recorded/s: over 1.25 s; the last
    # decision 0.4 s after the first, so all in 0.85 s after it
    # and the workers' 0.5 s of CPU over 2,000 decisions
    assert decision_row[-9:] == ["4,000", "5,000", "1,600", "1.25", "s", "0.85", "s", "25%", "250"]
    assert report.as_dict()["decisions"][0]["recorded"]["after_last"] == pytest.approx(0.85)
    assert "used_memory: 900 bytes/session, 1,193,046 sessions per GB" in lines
    assert report.as_dict()["decisions"][0]["every_cart_one_offer"] is True


def test_replies_are_counted_only_once_whole():
    # A status, an error, a bulk string, a null and an array of two; then a bulk cut short.
    whole = b"+OK\r\n-ERR no\r\n$3\r\nf\r\n\r\n$-1\r\n*2\r\n:1\r\n$1\r\nd\r\n"
    assert replies_in(whole + b"$5\r\nff") == (5, 1, len(whole))
    assert replies_in(b"*2\r\n:1\r\n") == (0, 0, 0)
    assert replies_in(b"") == (0, 0, 0)
    with pytest.raises(ValueError, match="not a RESP2 reply"):
        replies_in(b"?what\r\n")


@pytest.mark.services
def test_a_front_end_pipelines_the_frames_that_come_while_a_request_is_in_flight():
    if not answers(6379):
        service_missing("Redis at 127.0.0.1:6379")
    client = redis.Redis.from_url(REDIS_URL)
    assert client.dbsize() == 0, "another run is using this Redis database"
    # 300 frames within about a millisecond on one front end: most must wait for a request
    # in flight, and go out together in the next.
    burst = measure_load(REDIS_URL, "packed (now)", _APPLY_LUA, 300_000, 0.001, front_ends=1)
    assert burst.frames == 300 and burst.errors == 0
    assert burst.requests < 100 and burst.frames_per_request > 3
    # The same frames spread over a second: each goes alone, as a quiet front end sends it.
    quiet = measure_load(REDIS_URL, "packed (now)", _APPLY_LUA, 300, 1.0, front_ends=1)
    assert quiet.frames == 300 and quiet.errors == 0
    assert quiet.frames_per_request < 1.2
    assert client.dbsize() == 0
