"""A token bucket: `rate` tokens a second, holding at most `burst`."""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, wanted: int, now: float) -> int:
        """Grant up to `wanted` tokens; returns how many were granted."""
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted

    def give_back(self, tokens: int) -> None:
        """Return tokens taken but not used (never above `burst`)."""
        if tokens > 0:
            self._tokens = min(float(self.burst), self._tokens + tokens)
