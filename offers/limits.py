"""What one client may take of a process: sockets, events a second; and what all of them may.

A client is the peer address of a connection, or, when that peer is a proxy listed in
`TRUSTED_PROXIES`, the address it says it forwards for (the right-most one in
`X-Forwarded-For` that is not itself a trusted proxy). Every refusal is counted in `/metrics`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Final

from streaming.ratelimit import TokenBucket

_MAX_BUCKETS: Final = 50_000
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.1`, `10.0.0.0/8`, `::1`: the trusted proxies' addresses."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address of the client behind a connection from `peer`."""
    address = peer or "unknown"
    if not trusted or not _within(address, trusted) or not forwarded_for:
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not hop:
            continue
        if not _within(hop, trusted):
            return hop
        address = hop
    return address


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def scope_client(scope: dict[str, Any], trusted: Sequence[Network]) -> str:
    """The client of an ASGI connection (its peer, or who a trusted proxy forwards for)."""
    peer = scope.get("client")
    forwarded = None
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            forwarded = bytes(value).decode("latin-1")
    return client_address(peer[0] if peer else None, forwarded, trusted)


class Limits:
    """Sockets per client and in this process, and the token buckets of clients and sessions."""

    def __init__(
        self,
        *,
        sockets_per_client: int,
        sockets: int,
        client_rate: float,
        client_burst: int,
        session_rate: float,
        session_burst: int,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.sockets_per_client = sockets_per_client
        self.max_sockets = sockets
        self.client_rate = client_rate
        self.client_burst = client_burst
        self.session_rate = session_rate
        self.session_burst = session_burst
        self.trusted_proxies = tuple(trusted_proxies)
        self.open: Counter[str] = Counter()
        self.total = 0
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self._sessions: OrderedDict[str, TokenBucket] = OrderedDict()

    def client_of(self, scope: dict[str, Any]) -> str:
        return scope_client(scope, self.trusted_proxies)

    def admit(self, client: str) -> str:
        """Take a socket for `client`: '' when admitted, else why not ('client' or 'total')."""
        if self.total >= self.max_sockets:
            return "total"
        if self.open[client] >= self.sockets_per_client:
            return "client"
        self.open[client] += 1
        self.total += 1
        return ""

    def release(self, client: str) -> None:
        self.open[client] -= 1
        self.total -= 1
        if self.open[client] <= 0:
            del self.open[client]

    def take(self, session_id: str, client: str, wanted: int, now: float) -> int:
        """Events `session_id` may send now from `client`, up to `wanted`: within the session's
        bucket (all its sockets and requests together) and its client's."""
        by_client = _bucket(self._clients, client, self.client_rate, self.client_burst, now)
        granted = by_client.take(wanted, now)
        by_session = _bucket(self._sessions, session_id, self.session_rate, self.session_burst, now)
        taken = by_session.take(granted, now)
        by_client.give_back(granted - taken)
        return taken


def _bucket(
    buckets: OrderedDict[str, TokenBucket], key: str, rate: float, burst: int, now: float
) -> TokenBucket:
    """The bucket of `key` (a bounded LRU: the least recently used are forgotten first)."""
    bucket = buckets.get(key)
    if bucket is None:
        bucket = buckets[key] = TokenBucket(rate=rate, burst=burst, now=now)
        if len(buckets) > _MAX_BUCKETS:
            buckets.popitem(last=False)
    else:
        buckets.move_to_end(key)
    return bucket
