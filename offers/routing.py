from __future__ import annotations

from django.urls import path

from offers.consumers import CollectorConsumer

websocket_urlpatterns = [
    path("ws/collect/", CollectorConsumer.as_asgi()),
]
