"""Prometheus metrics served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from streaming.protocol import ERROR_CODES

EVENTS_RECEIVED = Counter("liveoffers_events_received", "Events received, valid or not.")
EVENTS_ACCEPTED = Counter("liveoffers_events_accepted", "Events applied to session state.")
EVENTS_DUPLICATE = Counter("liveoffers_events_duplicate", "Events acknowledged again, not applied.")
EVENTS_REFUSED = Counter(
    "liveoffers_events_refused", "Events or frames refused, by error code.", ["code"]
)
for _code in ERROR_CODES:
    EVENTS_REFUSED.labels(_code)
CONNECTIONS_REFUSED = Counter(
    "liveoffers_connections_refused", "Collector handshakes refused, by reason.", ["reason"]
)
for _reason in ("unknown_site", "origin"):
    CONNECTIONS_REFUSED.labels(_reason)
CONNECTIONS_CLOSED = Counter(
    "liveoffers_connections_closed_by_server",
    "Collector sockets closed by the server, by code.",
    ["code"],
)
LIVE_SESSIONS = Gauge("liveoffers_live_sessions", "Sessions held in this process's store.")
OPEN_SOCKETS = Gauge("liveoffers_open_sockets", "Collector sockets open in this process.")
