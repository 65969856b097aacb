from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from offers.consumers import CollectorConsumer, DashboardConsumer

websocket_urlpatterns = [
    # Shops' pages on any allowed origin: checked per site, no cookies involved.
    path("ws/collect/", CollectorConsumer.as_asgi()),
    # Operators: their session cookie, and only from this server's own pages (the consumer
    # checks the whole origin: scheme, host and port).
    path(
        "ws/dashboard/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi())),
    ),
]
