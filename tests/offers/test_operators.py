"""The operator side's gate: who is an operator, and which origin is the dashboard's own."""

from __future__ import annotations

import pytest
from django.test import override_settings

from offers.operators import own_origin


def scope(origin: str | None, host: str = "offers.example", scheme: str = "ws", **headers: str):
    raw = [(b"host", host.encode())]
    if origin is not None:
        raw.append((b"origin", origin.encode()))
    raw += [(name.encode(), value.encode()) for name, value in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": raw}


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "same"),
    [
        ("http://offers.example", "offers.example", "ws", True),
        ("http://OFFERS.example:80/", "offers.example", "ws", True),
        ("https://offers.example", "offers.example", "wss", True),
        ("http://offers.example:8000", "offers.example:8000", "ws", True),
        ("http://offers.example:9999", "offers.example:8000", "ws", False),
        ("https://offers.example", "offers.example", "ws", False),
        ("http://offers.example", "offers.example", "wss", False),
        ("http://evil.example", "offers.example", "ws", False),
        ("null", "offers.example", "ws", False),
        (None, "offers.example", "ws", False),
    ],
)
def test_only_the_dashboards_own_scheme_host_and_port_may_open_its_socket(
    origin, host, scheme, same
):
    assert own_origin(scope(origin, host, scheme)) is same


def test_behind_a_tls_proxy_the_forwarded_scheme_counts():
    behind = scope("https://offers.example", **{"x-forwarded-proto": "https"})
    assert own_origin(behind) is True
    assert own_origin(scope("http://offers.example", **{"x-forwarded-proto": "https"})) is False


@override_settings(CSRF_TRUSTED_ORIGINS=["https://ops.example"])
def test_a_trusted_origin_may_open_it_too():
    assert own_origin(scope("https://ops.example")) is True
    assert own_origin(scope("https://ops.example:444")) is False
