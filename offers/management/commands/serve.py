from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from streaming.protocol import MAX_FRAME_BYTES

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Serve Live Offers: HTTP, the sockets and static files with daphne, and, unless "
        "--no-worker, the stream worker in the same process and event loop."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Leave detection to `runstream` workers (Redis mode only).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # daphne.server installs Twisted's asyncio reactor on import: import it first.
        from daphne.server import Server
        from twisted.internet import defer, reactor

        from config.asgi import application
        from offers.runtime import get_runtime

        host, port = options["host"], options["port"]
        worker_task: asyncio.Task[None] | None = None
        runtime = get_runtime()
        if options["no_worker"] and not settings.REDIS_URL:
            self.stderr.write(
                "--no-worker needs REDIS_URL: in embedded mode the worker runs in this process"
            )
            raise SystemExit(2)

        def ready() -> None:
            nonlocal worker_task
            # Close an oversized frame with a proper 1009 close frame, not a dropped TCP stream.
            server.ws_factory.setProtocolOptions(failByDrop=False)
            if not options["no_worker"]:
                worker_task = asyncio.get_event_loop().create_task(runtime.worker.run())
            mode = "redis" if settings.REDIS_URL else "embedded"
            base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
            self.stdout.write(f"Live Offers serving on {base}/ ({mode} mode)")
            self.stdout.write(f"  shop {base}/   admin {base}/admin/   health {base}/healthz")
            self.stdout.flush()

        def stop_worker() -> defer.Deferred[None] | None:
            runtime.worker.stop()
            if worker_task is None or worker_task.done():
                return None
            return defer.Deferred.fromFuture(asyncio.ensure_future(_wait(worker_task)))

        twisted_reactor: Any = reactor  # the installed asyncio reactor; its stubs are partial
        twisted_reactor.addSystemEventTrigger("before", "shutdown", stop_worker)
        interface = host.replace(":", r"\:")
        server = Server(
            application=application,
            endpoints=[f"tcp:port={port}:interface={interface}"],
            signal_handlers=True,
            verbosity=0,
            websocket_max_message_size=MAX_FRAME_BYTES,
            websocket_max_frame_size=MAX_FRAME_BYTES,
            ready_callable=ready,
        )
        server.run()
        self.stdout.write("Live Offers stopped")


async def _wait(task: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(task, timeout=5)
    except (TimeoutError, asyncio.CancelledError):
        log.warning("stream worker did not stop within 5 s")
