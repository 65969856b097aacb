"""Prometheus metrics served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from streaming.policy import OUTCOMES
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
ACTIVE_SESSIONS = Gauge(
    "liveoffers_active_sessions",
    "Sessions that sent an event within the last ten pauses (the dashboard's live sessions).",
)
CARTS_AT_RISK = Gauge(
    "liveoffers_carts_at_risk",
    "Of the active sessions, those whose cart is not empty and not bought.",
)
OPEN_SOCKETS = Gauge("liveoffers_open_sockets", "Collector sockets open in this process.")

DECISIONS = Counter("liveoffers_decisions", "Decisions made, by outcome.", ["outcome"])
for _outcome in OUTCOMES:
    DECISIONS.labels(_outcome)
DECISION_DELAY = Histogram(
    "liveoffers_decision_delay_seconds",
    "From a pause's deadline to its decision (offer frame sent).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ACTIVE_MODEL = Info("liveoffers_active_model", "The model decisions are scored with.")
MODEL_LOAD_FAILURES = Counter(
    "liveoffers_model_load_failures",
    "Model versions that could not be loaded (the last good one stays).",
)
RECORD_FAILURES = Counter(
    "liveoffers_record_failures", "Failed attempts to write decisions to the database (retried)."
)
CHANNEL_LAYER_DROPS = Counter(
    "liveoffers_channel_layer_drops",
    "Messages channels-redis dropped in group_send because a server's channel was at capacity "
    "(CHANNEL_LAYER=core); an offer dropped so is shown on the shopper's next connect.",
)
CHANNEL_LAYER_RECEIVE_FAILURES = Counter(
    "liveoffers_channel_layer_receive_failures",
    "Times this process's channel-layer subscriber failed to read from Redis "
    "(CHANNEL_LAYER=pubsub); its collector sockets are closed with 4503 to reconnect.",
)
FRAME_CRASHES = Counter(
    "liveoffers_frame_crashes",
    "Collector frames whose handling failed unexpectedly; each was answered with an error frame "
    "and its socket kept open. Any count here is a bug to look into.",
)
DELIVERIES_FAILED = Counter(
    "liveoffers_deliveries_failed",
    "Frames a collector socket of this process failed to take (it had closed or broke); the "
    "socket is skipped and its offer recorded all the same, shown again on reconnect.",
)
OFFER_EVENTS_IGNORED = Counter(
    "liveoffers_offer_events_ignored",
    "offer_shown, offer_accepted and offer_dismissed events naming an offer that is not their "
    "session's: acknowledged and ignored (never recorded, never counted on the dashboard).",
)
RECORDS_WRITTEN = Counter(
    "liveoffers_records_written", "Journal records written to the database (or set aside)."
)
RECORDS_DEAD = Counter(
    "liveoffers_records_dead",
    "Records that could not be written, set aside in the dead-letter table, by kind.",
    ["kind"],
)
RECORD_BACKLOG = Gauge(
    "liveoffers_record_backlog", "Journal records waiting to be written to the database."
)
RECORD_HELD_BACK = Counter(
    "liveoffers_record_held_back",
    "Worker steps that claimed no pause because the record's backlog was over its limit.",
)
BODIES_REFUSED = Counter(
    "liveoffers_bodies_refused",
    "HTTP requests refused (413) because their body was over its path's limit.",
)
FEATURE_PSI = Gauge(
    "liveoffers_feature_psi",
    "Population stability index of each feature over the last 24 hours of decisions against "
    "the active model's training data (above 0.2: shoppers no longer look like it); absent "
    "while there are too few decisions to tell.",
    ["feature"],
)
SCORE_PSI = Gauge(
    "liveoffers_score_psi",
    "Population stability index of the active model's risk scores over the last 24 hours "
    "against its scores on its training data; NaN while there are too few to tell.",
)
SCORE_PSI.set(float("nan"))  # not measured yet
