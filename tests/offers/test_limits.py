"""What one client may take of a server, and what all clients may."""

from __future__ import annotations

from typing import Any

import pytest

from offers.limits import Limits, client_address, parse_networks
from tests.factories import T0

PROXIES = parse_networks(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.7", None, "203.0.113.7"),
        (
            "203.0.113.7",
            "198.51.100.1",
            "203.0.113.7",
        ),  # not a trusted proxy: its word is not taken
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        ("10.1.2.3", "1.1.1.1, 198.51.100.1", "198.51.100.1"),  # the left one is the client's say
        ("10.1.2.3", "198.51.100.1, 10.9.9.9", "198.51.100.1"),  # past a chain of our proxies
        ("10.1.2.3", "", "10.1.2.3"),
        ("10.1.2.3", "not an address", "not an address"),
        ("::1", "2001:db8::5", "2001:db8::5"),
    ],
)
def test_the_client_is_the_peer_or_whom_a_trusted_proxy_forwards_for(peer, forwarded, client):
    assert client_address(peer, forwarded, PROXIES) == client


def limits(**overrides: Any) -> Limits:
    values: dict[str, Any] = {
        "sockets_per_client": 2,
        "sockets": 3,
        "client_rate": 0.001,
        "client_burst": 10,
        "session_rate": 0.001,
        "session_burst": 4,
    }
    values.update(overrides)
    return Limits(**values)


def test_sockets_are_bounded_per_client_and_in_total():
    gate = limits()
    assert [gate.admit("a"), gate.admit("a"), gate.admit("a")] == ["", "", "client"]
    assert gate.admit("b") == ""
    assert gate.admit("c") == "total"
    gate.release("a")
    assert gate.admit("c") == ""
    assert gate.open == {"a": 1, "b": 1, "c": 1} and gate.total == 3


def test_a_session_shares_one_bucket_and_a_client_one_bigger_one():
    gate = limits()
    assert gate.take("s1", "a", 3, T0) == 3  # one socket of the session
    assert gate.take("s1", "a", 3, T0) == 1  # another socket of it: the same bucket
    assert gate.take("s2", "a", 5, T0) == 4
    assert gate.take("s3", "a", 5, T0) == 2  # the client's 10 are spent: s3 gets what is left
    assert gate.take("s4", "b", 4, T0) == 4  # another client is not touched
    assert gate.take("s5", "a", 1, T0) == 0


def test_what_a_session_could_not_take_stays_with_its_client():
    gate = limits(session_burst=1)
    assert gate.take("s1", "a", 5, T0) == 1
    assert gate.take("s2", "a", 9, T0) == 1  # s1's unused 4 went back to the client's bucket
    assert gate.take("s3", "a", 9, T0) == 1
