"""The framework's floor for `bench ingest`: the least a Channels consumer served by daphne does.

`FloorConsumer` keeps Channels' default behaviour (its per-message `aclose_old_connections`
housekeeping included) and does the bare baseline's per-frame work, nothing more. Run it as its
own process: `python -m benchmarks.floor --port PORT`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from benchmarks.bare import ack
from streaming.protocol import MAX_FRAME_BYTES


class FloorConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    # Like the collector, it takes nothing from the channel layer: the floor measures per-frame
    # work, not a layer subscription per socket.
    channel_layer_alias = "__floor_has_no_layer__"

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        data = text_data if text_data is not None else bytes_data
        if data is not None:
            await self.send(text_data=ack(data))


def build_application() -> Any:
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    return ProtocolTypeRouter(
        {"websocket": URLRouter([path("ws/collect/", FloorConsumer.as_asgi())])}
    )


def serve(host: str, port: int) -> None:
    import django

    # Channels' housekeeping reads DATABASES: the floor runs under the project's settings.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    # daphne.server installs Twisted's asyncio reactor on import: import it first.
    from daphne.server import Server

    interface = host.replace(":", r"\:")
    Server(
        application=build_application(),
        endpoints=[f"tcp:port={port}:interface={interface}"],
        signal_handlers=True,
        verbosity=0,
        websocket_max_message_size=MAX_FRAME_BYTES,
        websocket_max_frame_size=MAX_FRAME_BYTES,
    ).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
