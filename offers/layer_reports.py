"""What channels-redis reports only in its logs, counted and acted on.

channels-redis 4.3 says two things that matter to offers nowhere but in its loggers:

- `RedisChannelLayer.group_send` drops the message for each server channel already holding
  `capacity` messages, and logs "N of M channels over capacity in group G" (INFO);
- `RedisPubSubChannelLayer` logs "Unexpected exception in receive task" (ERROR) each time this
  process's subscriber fails to read from Redis (Redis restarted, the connection dropped): what
  is published to this process's sockets until it has subscribed again is lost.

`LayerReports`, a filter on those two loggers (`install()`, called by the app's `ready`), counts
both in /metrics and tells the runtime of a failed subscriber, which closes the collector sockets
of this process with 4503 so that their pages reconnect. Nothing is lost for the shopper either
way: an offer is kept in session state and sent on every connect while it is valid and
unanswered (docs/DEPLOY.md, "Channel layer"). tests/offers/test_layer.py pins these messages
against a real Redis, so an upgrade that rewords them fails there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from offers import metrics

OVER_CAPACITY = "%s of %s channels over capacity in group %s"
RECEIVE_FAILED = "Unexpected exception in receive task"

_on_receive_failure: Callable[[], None] | None = None


def on_receive_failure(callback: Callable[[], None] | None) -> None:
    """Call `callback` (in the event loop's thread) whenever the subscriber fails to read."""
    global _on_receive_failure
    _on_receive_failure = callback


REPORTING_LOGGERS = ("channels_redis.core", "channels_redis.pubsub")


def install() -> None:
    """Read channels-redis's reports, whatever LOG_LEVEL says; once, however often it is called
    (Django sets up again when the ASGI application is imported, and LOGGING with it)."""
    for name in REPORTING_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not any(isinstance(f, LayerReports) for f in logger.filters):
            logger.addFilter(LayerReports())


class LayerReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == OVER_CAPACITY and isinstance(record.args, tuple):
            over_capacity = record.args[0] if record.args else None
            if isinstance(over_capacity, int):
                metrics.CHANNEL_LAYER_DROPS.inc(over_capacity)
            # A message lost is worth a warning, whatever level channels-redis gave it.
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif record.msg == RECEIVE_FAILED:
            metrics.CHANNEL_LAYER_RECEIVE_FAILURES.inc()
            if _on_receive_failure is not None:
                _on_receive_failure()
        return True
