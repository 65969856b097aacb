"""The bare baseline of `bench ingest`: a `websockets` server that parses each frame and acks it.

Nothing else happens per frame, so it is the most a Python WebSocket server does for the same
traffic. Run it as its own process: `python -m benchmarks.bare --port PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from streaming.protocol import MAX_FRAME_BYTES


def frame_ids(frame: Any) -> list[str]:
    """The ids to acknowledge for one parsed client frame: the track's id or the batch's ids."""
    if frame.get("type") == "batch":
        return [event["id"] for event in frame["events"]]
    return [frame["id"]]


def ack(data: str | bytes) -> str:
    """The only per-frame work of both baselines: parse the frame, encode its ack."""
    return json.dumps({"type": "ack", "ids": frame_ids(json.loads(data))})


async def answer(websocket: ServerConnection) -> None:
    # A pipelining client leaves with acks still in flight; that is its goodbye, not an error.
    with contextlib.suppress(ConnectionClosed):
        async for message in websocket:
            await websocket.send(ack(message))


async def start(host: str, port: int) -> Server:
    # Compression off: the collector's daphne does not negotiate permessage-deflate either.
    return await serve(
        answer, host, port, compression=None, max_size=MAX_FRAME_BYTES, ping_interval=None
    )


async def serve_until_stopped(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    server = await start(host, port)
    try:
        await stop
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve_until_stopped(args.host, args.port))


if __name__ == "__main__":
    main()
