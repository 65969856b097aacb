"""`GET /api/alerts/` and acknowledging an alert (operators only, like the decisions API)."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_POST
from redis.exceptions import RedisError

from offers.alerts import GROUP, alert_acknowledge, alert_json, alert_message, alerts_listed
from offers.operators import is_operator

log = logging.getLogger(__name__)


def _forbidden() -> JsonResponse:
    return JsonResponse(
        {
            "error": "forbidden",
            "detail": "operators only: staff with the offers.view_decision permission",
        },
        status=403,
    )


@require_GET
def api_alerts(request: HttpRequest) -> HttpResponse:
    """`{"alerts": [...]}`: open ones first, newest first, then the latest resolved ones."""
    if not is_operator(request.user):
        return _forbidden()
    return JsonResponse({"alerts": [alert_json(alert) for alert in alerts_listed()]})


@require_POST
def api_alert_acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    """The operator has seen it (a CSRF-protected post from the dashboard)."""
    if not is_operator(request.user):
        return _forbidden()
    alert = alert_acknowledge(alert_id, request.user.get_username())
    if alert is None:
        return JsonResponse({"error": "not_found", "detail": "no such alert"}, status=404)
    # Every other dashboard open now shows who acknowledged it too.
    layer = get_channel_layer()
    if layer is not None:
        try:
            async_to_sync(layer.group_send)(GROUP, alert_message(alert, "acknowledged"))
        except (RedisError, OSError):
            log.warning("could not tell the dashboards of an acknowledgement", exc_info=True)
    return JsonResponse(alert_json(alert))
