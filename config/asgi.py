"""ASGI entry point: Django for HTTP, Channels for the sockets."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from offers.bodies import BodyLimit  # noqa: E402
from offers.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # bodies bounded before Django reads them
        "http": BodyLimit(django_asgi_app),
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
