from __future__ import annotations

import asyncio
import hmac
import signal
import threading
from argparse import ArgumentParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class Command(BaseCommand):
    help = (
        "Run a stream worker on its own (Redis mode): it claims due pauses, decides, sends offers "
        "through the channel layer and records decisions. Any number may run at once."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve this worker's Prometheus metrics at http://HOST:PORT/metrics "
            "(with METRICS_TOKEN as the bearer token when set); off by default",
        )
        parser.add_argument(
            "--metrics-host", default="127.0.0.1", help="address for --metrics-port (127.0.0.1)"
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            self.stderr.write(
                "runstream needs REDIS_URL: in embedded mode `serve` runs the stream worker itself"
            )
            raise SystemExit(2)
        metrics = None
        if options["metrics_port"] is not None:
            metrics = serve_metrics(options["metrics_host"], options["metrics_port"])
            host, port = metrics.server_address[:2]
            self.stdout.write(f"runstream: metrics at http://{host!s}:{port}/metrics")
        try:
            asyncio.run(self.run())
        finally:
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()
        self.stdout.write("runstream: stopped")

    async def run(self) -> None:
        from offers.management.commands.serve import settle_garbage_collector
        from offers.runtime import configure_runtime

        runtime = configure_runtime(decides=True)
        settle_garbage_collector(runtime)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # A signal only asks the loop to stop; the step under way finishes first.
            loop.add_signal_handler(sig, runtime.worker.stop)
        self.stdout.write("runstream: worker started (redis mode)")
        self.stdout.flush()
        await runtime.worker.run()


class MetricsHandler(BaseHTTPRequestHandler):
    """`GET /metrics` of a worker, under the same bearer token as the servers' `/metrics`."""

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self._answer(404, b"not found\n", "text/plain")
            return
        token = settings.METRICS_TOKEN
        supplied = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token and not hmac.compare_digest(supplied.encode(), token.encode()):
            self._answer(401, b"metrics need the bearer token\n", "text/plain")
            return
        self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a log line


def serve_metrics(host: str, port: int) -> ThreadingHTTPServer:
    """Serve /metrics from a daemon thread; the caller shuts it down."""
    try:
        server = ThreadingHTTPServer((host, port), MetricsHandler)
    except OSError as exc:
        raise CommandError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
