from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Run a stream worker on its own (Redis mode): it claims due pauses, decides, sends offers "
        "through the channel layer and records decisions. Any number may run at once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            self.stderr.write(
                "runstream needs REDIS_URL: in embedded mode `serve` runs the stream worker itself"
            )
            raise SystemExit(2)
        asyncio.run(self.run())
        self.stdout.write("runstream: stopped")

    async def run(self) -> None:
        from offers.management.commands.serve import settle_garbage_collector
        from offers.runtime import configure_runtime

        runtime = configure_runtime(decides=True)
        settle_garbage_collector()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # A signal only asks the loop to stop; the step under way finishes first.
            loop.add_signal_handler(sig, runtime.worker.stop)
        self.stdout.write("runstream: worker started (redis mode)")
        self.stdout.flush()
        await runtime.worker.run()
