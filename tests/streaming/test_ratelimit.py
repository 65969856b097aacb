from __future__ import annotations

from streaming.ratelimit import TokenBucket
from tests.factories import T0


def test_it_grants_the_burst_then_refills_at_the_rate():
    bucket = TokenBucket(rate=50, burst=200, now=T0)
    assert bucket.take(150, T0) == 150
    assert bucket.take(100, T0) == 50
    assert bucket.take(1, T0) == 0
    assert bucket.take(100, T0 + 1) == 50
    assert bucket.take(1000, T0 + 100) == 200


def test_a_clock_going_backwards_grants_nothing_extra():
    bucket = TokenBucket(rate=10, burst=10, now=T0)
    assert bucket.take(10, T0) == 10
    assert bucket.take(1, T0 - 5) == 0
