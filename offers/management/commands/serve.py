from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import resource
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from offers import metrics
from offers.consumers import CLOSE_NOT_READING, CLOSE_TOO_BIG
from offers.runtime import Runtime, configure_runtime
from streaming.worker import IdleCollector

log = logging.getLogger(__name__)

SERVERS = ("daphne", "uvicorn")
MAX_SERVER_FRAME_BYTES = 1024 * 1024


class Command(BaseCommand):
    help = (
        "Serve Live Offers: HTTP, the sockets and static files, and, unless --no-worker, the "
        "stream worker in the same process and event loop."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Leave detection to `runstream` workers (Redis mode only).",
        )
        parser.add_argument(
            "--server",
            choices=SERVERS,
            default="uvicorn",
            help=(
                "The ASGI server: uvicorn (default) or daphne. daphne reads a whole request body "
                "and parses a form on its event loop before the body limits see it: run it only "
                "behind a proxy that bounds bodies (docs/DEPLOY.md)."
            ),
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        unsafe = unsafe_to_expose(options["host"])
        if unsafe:
            self.stderr.write(unsafe)
            raise SystemExit(2)
        if options["no_worker"] and not settings.REDIS_URL:
            self.stderr.write(
                "--no-worker needs REDIS_URL: in embedded mode the worker runs in this process"
            )
            raise SystemExit(2)
        with_worker = not options["no_worker"]
        _raise_open_files_limit()
        runtime = configure_runtime(decides=with_worker)
        settle_garbage_collector(runtime)
        if options["server"] == "uvicorn":
            asyncio.run(self.serve_uvicorn(runtime, options["host"], options["port"]))
        else:
            self.serve_daphne(runtime, options["host"], options["port"])
        self.stdout.write("Live Offers stopped")

    def announce(self, host: str, port: int, server: str) -> None:
        mode = "redis" if settings.REDIS_URL else "embedded"
        base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.stdout.write(f"Live Offers serving on {base}/ ({mode} mode, {server})")
        self.stdout.write(f"  shop {base}/   dashboard {base}/dashboard/   admin {base}/admin/")
        self.stdout.flush()

    def serve_daphne(self, runtime: Runtime, host: str, port: int) -> None:
        # daphne.server installs Twisted's asyncio reactor on import: import it first.
        from daphne.server import Server
        from twisted.internet import defer, reactor

        from config.asgi import application

        worker_task: asyncio.Task[None] | None = None

        def ready() -> None:
            nonlocal worker_task
            server.ws_factory.setProtocolOptions(failByDrop=False)
            server.ws_factory.protocol = _daphne_protocol_class()
            worker_task = asyncio.get_event_loop().create_task(runtime.worker.run())
            self.announce(host, port, "daphne")

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
            # autobahn applies these limits to frames sent as well as received, and a dashboard
            # snapshot is larger than a shopper's frame may be: the consumers check what they
            # receive themselves (16 KiB for the collector, closing with 1009).
            websocket_max_message_size=MAX_SERVER_FRAME_BYTES,
            websocket_max_frame_size=MAX_SERVER_FRAME_BYTES,
            ready_callable=ready,
        )
        server.run()

    async def serve_uvicorn(self, runtime: Runtime, host: str, port: int) -> None:
        import uvicorn

        from config.asgi import application

        config = uvicorn.Config(
            application,
            host=host,
            port=port,
            http=_uvicorn_http_protocol_class(),
            ws=_uvicorn_ws_protocol_class(),
            # as daphne's: a frame up to 1 MiB reaches the consumer, which answers one over
            # 16 KiB itself (1009) rather than the connection being dropped
            ws_max_size=MAX_SERVER_FRAME_BYTES,
            timeout_keep_alive=max(1, round(settings.IDLE_TIMEOUT_SECONDS)),
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
        )
        server = _uvicorn_server_class()(config)
        worker_task = asyncio.create_task(runtime.worker.run())
        self.announce(host, port, "uvicorn")
        try:
            await server.serve()  # returns after SIGTERM or Ctrl-C, once connections are closed
        finally:
            runtime.worker.stop()
            await _wait(worker_task)


def unsafe_to_expose(host: str) -> str:
    """Why `host` may not be served with these settings ('' when it may): beyond this machine,
    debug pages would show anyone the server's insides, and the public development SECRET_KEY
    would let anyone forge shoppers' session tokens."""
    if _loopback(host):
        return ""
    problems = []
    if settings.DEBUG:
        problems.append("DEBUG is on (set DEBUG=0)")
    if settings.SECRET_KEY == settings.DEV_SECRET_KEY:
        problems.append("SECRET_KEY is the public development key (set SECRET_KEY)")
    if not problems:
        return ""
    return (
        f"refusing to serve on {host}, which other machines can reach: "
        + "; ".join(problems)
        + ". On this machine only, use --host 127.0.0.1."
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _daphne_protocol_class() -> type[Any]:
    from daphne.ws_protocol import WebSocketProtocol

    class CollectorWebSocketProtocol(WebSocketProtocol):  # type: ignore[misc]  # daphne is untyped
        def serverClose(self, code: int | None = None) -> None:
            # autobahn lets an application close only with 1000 or 3000-4999, but 1009
            # ("message too big") is what the collector answers an oversized frame with.
            if code == CLOSE_TOO_BIG:
                self.sendCloseFrame(code=code, reasonUtf8=b"frame over 16 KiB", isReply=False)
            else:
                super().serverClose(code)

        def handle_reply(self, message: dict[str, Any]) -> None:
            super().handle_reply(message)
            # Twisted buffers whatever the client does not read, without bound: a client that
            # lets more than MAX_UNSENT_BYTES pile up is cut off here.
            if message["type"] == "websocket.send" and (
                _unsent_bytes(self.transport) > settings.MAX_UNSENT_BYTES
            ):
                log.warning("closing a socket that does not read")
                metrics.CONNECTIONS_CLOSED.labels(str(CLOSE_NOT_READING)).inc()
                self.sendCloseFrame(code=CLOSE_NOT_READING, isReply=False)
                self.dropConnection(abort=True)

    return CollectorWebSocketProtocol


def _unsent_bytes(transport: Any) -> int:
    """What a Twisted transport holds that the kernel has not taken yet."""
    try:
        unsent: int = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        return unsent
    except (AttributeError, TypeError):
        return 0


def _uvicorn_ws_protocol_class() -> type[Any]:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class CollectorWebSocketsProtocol(WebSocketsSansIOProtocol):
        async def send(self, message: Any) -> None:
            if (
                message["type"] == "websocket.close"
                and self.handshake_complete
                and not self.close_sent
                and not self.writable.is_set()
            ):
                # The client reads nothing, so the transport's buffer never drains and the
                # close frame would wait behind it for ever: the connection is cut instead.
                self.close_sent = True
                self.transport.abort()
                return
            await super().send(message)

    return CollectorWebSocketsProtocol


def _uvicorn_http_protocol_class() -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpProtocol(HttpToolsProtocol):
        """Closes a connection whose request headers do not all arrive within
        HEADER_TIMEOUT_SECONDS (a slow client holding a connection open for ever)."""

        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.header_timer = self.loop.call_later(
                settings.HEADER_TIMEOUT_SECONDS, self._headers_too_slow
            )

        def _disarm(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _headers_too_slow(self) -> None:
            self.header_timer = None
            metrics.CONNECTIONS_REFUSED.labels("header_timeout").inc()
            self.transport.close()

    return GuardedHttpProtocol


def _raise_open_files_limit() -> None:
    """Each socket is a file: let this process open as many as the system allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft - 256 < settings.MAX_SOCKETS:
        log.warning(
            "MAX_SOCKETS=%d, but this process may open only %d files: raise `ulimit -n`",
            settings.MAX_SOCKETS,
            soft,
        )


def _uvicorn_server_class() -> type[Any]:
    import uvicorn

    class UvicornServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises SIGTERM once it has shut down, which would kill the process
            # before the stream worker stops; a signal here means "stop cleanly, exit 0".
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

    return UvicornServer


def settle_garbage_collector(runtime: Runtime) -> None:
    """Keep garbage collections from stalling a server that holds thousands of sockets.

    What exists after start-up (Django, the model, the app) lives as long as the process:
    freezing it takes it out of every collection. From then on the stream worker collects,
    between pauses rather than in the middle of a burst (`streaming.worker.IdleCollector`).
    """
    gc.collect()
    gc.freeze()
    collector = IdleCollector(next_due=runtime.store.next_deadline)
    collector.take_over()
    runtime.worker.steps.append(collector.step)

    async def give_back() -> None:
        collector.give_back()

    runtime.worker.finishers.append(give_back)


async def _wait(task: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(task, timeout=5)
    except (TimeoutError, asyncio.CancelledError):
        log.warning("stream worker did not stop within 5 s")
