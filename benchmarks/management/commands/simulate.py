from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from benchmarks.clients.simulate import CannotConnect, SimulationReport, run_simulation

# Exit codes: 0 done, 1 no server to talk to, 2 bad arguments, 130 stopped with Ctrl-C.
EXIT_CANNOT_CONNECT = 1
EXIT_BAD_ARGUMENTS = 2
EXIT_INTERRUPTED = 130
# A terminal gets a status line redrawn in place; a log gets a line now and then.
TTY_EVERY = 0.5
LOG_EVERY = 5.0


class Command(BaseCommand):
    help = (
        "Shoppers that browse, search, compare, add to cart, pause, buy or leave, over real "
        "WebSockets against a Live Offers server, and react to its offers; prints what happened."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:8000",
            help="The server: http(s)://HOST[:PORT] or ws(s)://HOST[:PORT] (default %(default)s).",
        )
        parser.add_argument("--site", default="demo", help="Site key (default %(default)s).")
        parser.add_argument(
            "--shoppers", type=int, default=50, help="Shoppers live at once (default %(default)s)."
        )
        parser.add_argument(
            "--seconds",
            type=float,
            default=60.0,
            help="How long new shoppers keep arriving; the last pauses are then given the "
            "server's pause_seconds + 2 to be decided (default %(default)s).",
        )
        parser.add_argument("--seed", type=int, help="Repeat the same shoppers (default: random).")
        parser.add_argument(
            "--speed",
            type=float,
            default=10.0,
            help="How much faster than real time shoppers click; pauses always last just over "
            "the server's pause_seconds (default %(default)s).",
        )
        parser.add_argument("--origin", help="An Origin header to send, for sites that check it.")
        parser.add_argument(
            "--api-key",
            default=os.environ.get("LIVEOFFERS_API_KEY"),
            help="The site's API key (default: $LIVEOFFERS_API_KEY): each code a purchase uses is "
            "then redeemed at /api/redeem/, as the shop's backend would, so that its discount "
            "counts in the money figures. Without it, no code is redeemed.",
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        interactive = self.stderr.isatty()
        try:
            report = asyncio.run(self.simulate(options, self.progress_writer(interactive)))
        except ValueError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_ARGUMENTS) from exc
        except CannotConnect as exc:
            self.stderr.write(str(exc))
            raise SystemExit(EXIT_CANNOT_CONNECT) from exc
        finally:
            if interactive:
                self.stderr.write("")  # ends the status line
        self.stdout.write(report.table())
        if report.interrupted:
            raise SystemExit(EXIT_INTERRUPTED)

    async def simulate(
        self, options: dict[str, Any], progress: Callable[[SimulationReport], None]
    ) -> SimulationReport:
        # Ctrl-C or SIGTERM ends the run early, sockets closed and the summary printed.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await run_simulation(
                url=options["url"],
                site=options["site"],
                shoppers=options["shoppers"],
                seconds=options["seconds"],
                seed=options["seed"],
                speed=options["speed"],
                origin=options["origin"],
                api_key=options["api_key"],
                progress=progress,
                progress_every=TTY_EVERY if self.stderr.isatty() else LOG_EVERY,
                stop=stop,
            )
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def progress_writer(self, interactive: bool) -> Callable[[SimulationReport], None]:
        def redraw(report: SimulationReport) -> None:
            # \r returns to the line's start, ESC[K clears what a longer line left behind.
            self.stderr.write(f"\r{report.status()}\x1b[K", ending="")
            self.stderr.flush()

        def log(report: SimulationReport) -> None:
            self.stderr.write(report.status())
            self.stderr.flush()

        return redraw if interactive else log
