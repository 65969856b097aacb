"""The collector socket, `/ws/collect/` (docs/PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs

import msgspec
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from offers import metrics
from offers.alerts import GROUP as DASHBOARD_GROUP
from offers.collector import ingest
from offers.operators import is_operator, own_origin
from offers.runtime import get_runtime
from offers.sites import SiteUnknowable, find_site
from offers.tokens import issue_token, new_session_id, read_token
from streaming.delivery import session_group
from streaming.protocol import MAX_FRAME_BYTES, FrameError, ProtocolError, decode_frame

log = logging.getLogger(__name__)

MAX_ERRORS = 100
CLOSE_TOO_BIG = 1009
# The client reads too slowly: more output is waiting to be written to it than MAX_UNSENT_BYTES.
CLOSE_NOT_READING = 1008
CLOSE_TOO_MANY_ERRORS = 4400
# The session store (Redis) does not answer: nothing can be kept, so nothing is accepted.
CLOSE_STORE_DOWN = 4503
# The dashboard's user logged out (or is no longer an operator).
CLOSE_LOGGED_OUT = 4401
LOGIN_CHECK_SECONDS = 2.0
STORE_DOWN = (RedisError, ConnectionError, TimeoutError)
# What a queued frame costs beyond its text, so that a flood of tiny frames is bounded too.
FRAME_OVERHEAD = 64
# How long a close may wait for a server that does not take it at once.
CLOSE_WAIT_SECONDS = 5.0

_encode = msgspec.json.encode


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class CollectorConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    # Embedded mode: collector sockets take no messages from the in-process channel layer;
    # offers reach them through the runtime's delivery registry (streaming.delivery). Redis
    # mode: a worker in another process decides, so each socket joins its session's group.
    channel_layer_alias = "default" if settings.REDIS_URL else "__collector_has_no_layer__"

    session_id: str
    site_key: str
    # The client's address (behind a trusted proxy, the one it forwards for), once admitted.
    client: str | None = None
    errors: int = 0
    attached: bool = False
    grouped: bool = False
    accepted: bool = False
    # The server closed this socket, or a send to it failed: frames still queued go unanswered.
    closed: bool = False
    gone: bool = False
    # Frames waiting for this socket's writer task, and what they weigh (`FRAME_OVERHEAD` each
    # beyond their text): at most `MAX_UNSENT_BYTES`.
    outbox: deque[str]
    outbox_bytes: int = 0
    wake: asyncio.Event  # set when there is something for the writer
    writer: asyncio.Task[None] | None = None
    stopped: asyncio.Event  # set to end the consumer from within
    dispatching: asyncio.Lock  # held while a message is handled
    # The close to send once the frames queued before it are written.
    close_after: dict[str, Any] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # AsyncConsumer.__call__, with a channel-layer receive that rides out Redis's read
        # timeouts under load instead of ending the shopper's socket.
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        self.outbox = deque()
        self.wake = asyncio.Event()
        self.stopped = asyncio.Event()
        self.dispatching = asyncio.Lock()
        try:
            if self.channel_layer is not None:
                # The pub/sub layer subscribes here: it may find Redis down.
                self.channel_name = await self.channel_layer.new_channel()
            await self.serve(receive)
        except StopConsumer:
            pass
        except STORE_DOWN:
            self.stop_writer()
            # The channel layer lost Redis. Say so with a close the client understands
            # (come back later) rather than an internal error.
            log.warning("closing a collector socket: the channel layer failed", exc_info=True)
            metrics.CONNECTIONS_CLOSED.labels(str(CLOSE_STORE_DOWN)).inc()
            with contextlib.suppress(Exception):
                if not self.accepted:
                    await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_STORE_DOWN})
        finally:
            # However the consumer ends, even by a bug, its socket leaves: one left attached
            # would be counted open and sent offers forever.
            with contextlib.suppress(Exception):
                await self.leave()
            self.stop_writer()

    async def serve(self, receive: Any) -> None:
        """Dispatch the socket's messages one after another as they come, until it ends, it is
        stopped from within (a client that does not read, once let go), or the channel layer
        fails; the layer's messages (offers) are dispatched as they come too.

        Channels' `await_many_dispatch` makes a task a message and waits on all its sources at
        each: a third of the collector's time for single-event frames. Here the socket is read
        in a plain loop, and the rarer sources each have a task of their own.
        """
        loop = asyncio.get_running_loop()
        sources = [
            loop.create_task(self.receive_socket(receive)),
            loop.create_task(self.stopped.wait()),
        ]
        if self.channel_layer is not None:
            sources.append(loop.create_task(self.receive_layer()))
        try:
            done, _ = await asyncio.wait(sources, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in sources:
                task.cancel()
            await asyncio.gather(*sources, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def receive_socket(self, receive: Any) -> None:
        while True:
            message = await receive()
            async with self.dispatching:
                await self.dispatch(message)

    async def receive_layer(self) -> None:
        while True:
            try:
                message: dict[str, Any] = await self.channel_layer.receive(self.channel_name)
            except RedisTimeoutError:
                continue  # a slow read, not a lost Redis: wait for the next message
            # One message handled at a time: an offer that comes while the socket opens goes
            # out after the welcome.
            async with self.dispatching:
                await self.dispatch(message)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True
        self.writer = asyncio.get_running_loop().create_task(self.write_out())

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close after the frames already queued (an error frame goes out before its close)."""
        self.closed = True
        if self.writer is None or self.writer.done():
            await super().close(code, reason)  # before accept: the handshake is refused
            return
        message: dict[str, Any] = {"type": "websocket.close"}
        if code is not None and code is not True:
            message["code"] = code
        if reason:
            message["reason"] = reason
        self.close_after = message
        self.wake.set()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections around every message, a thread hop per
        # frame; this consumer touches the database only inside database_sync_to_async helpers,
        # which do that housekeeping themselves.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def deny(self, status: int, why: str) -> None:
        """Refuse the handshake with an HTTP status where the server can answer one (the ASGI
        denial-response extension), else as a plain refusal (403)."""
        if "websocket.http.response" in self.scope.get("extensions", {}):
            body = f"{why}; try again later\n".encode()
            await self.base_send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"text/plain"), (b"retry-after", b"10")],
                }
            )
            await self.base_send({"type": "websocket.http.response.body", "body": body})
            self.closed = True
            raise StopConsumer()
        await self.close()

    async def websocket_connect(self, _message: dict[str, Any]) -> None:
        params = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        key = params.get("site", [""])[0]
        try:
            site = await find_site(key)
        except SiteUnknowable:
            metrics.CONNECTIONS_REFUSED.labels("database_away").inc()
            await self.deny(503, "the database is away")
            return
        if site is None:
            metrics.CONNECTIONS_REFUSED.labels("unknown_site").inc()
            await self.close()  # before accept: the handshake is answered 403
            return
        if not site.allows_origin(_header(self.scope, b"origin")):
            metrics.CONNECTIONS_REFUSED.labels("origin").inc()
            await self.close()
            return
        runtime = get_runtime()
        client = runtime.limits.client_of(self.scope)
        refused = runtime.limits.admit(client)
        if refused:
            metrics.CONNECTIONS_REFUSED.labels(f"too_many_sockets_{refused}").inc()
            await self.deny(429 if refused == "client" else 503, f"too many sockets ({refused})")
            return
        self.client = client
        now = time.time()
        token = params.get("token", [None])[0]
        self.session_id = (
            read_token(token, site.key, max_age=runtime.token_max_age) or new_session_id()
        )
        self.site_key = site.key
        try:
            if self.channel_layer is not None:
                # Join the session's group before reading its state: an offer sent from now
                # on comes through the layer (after the welcome), one made before is in the
                # state. A layer whose Redis is still coming back is the store being down.
                await self.channel_layer.group_add(
                    session_group(self.session_id), self.channel_name
                )
                self.grouped = True
            state = await runtime.store.open(session_id=self.session_id, site=site.key, now=now)
        except STORE_DOWN:
            await self.accept()
            await self.store_down()
            return
        await self.accept()
        runtime.delivery.attach(self.session_id, self)
        self.attached = True
        await self.push_frame(
            {
                "type": "welcome",
                "session": self.session_id,
                "token": issue_token(self.session_id, site.key),
                "pause_seconds": float(runtime.pause_seconds),
            }
        )
        # An offer made while the shopper's page was closed is shown when they come back.
        offer = state.live_offer(now)
        if offer is not None:
            self.push(offer)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self.closed or self.gone:
            return  # read before the close, handled after it: nothing is applied or answered
        try:
            await self.receive_frame(message)
        except Exception as exc:
            if self.gone:
                return  # the client left while its frame was answered
            if isinstance(exc, STORE_DOWN):
                raise
            # The last resort: a frame that some bug lets through is answered like any bad
            # frame, and counted, instead of ending the socket with an internal error (1011).
            log.exception("a collector frame failed; answered with an error frame")
            metrics.FRAME_CRASHES.inc()
            with contextlib.suppress(Exception):
                await self.refuse([ProtocolError("bad_frame", "this frame could not be handled")])

    async def receive_frame(self, message: dict[str, Any]) -> None:
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
            if data is None:
                return
        elif len(data) * 4 > MAX_FRAME_BYTES:
            data = data.encode()
        if len(data) > MAX_FRAME_BYTES:
            metrics.CONNECTIONS_CLOSED.labels(str(CLOSE_TOO_BIG)).inc()
            await self.close(code=CLOSE_TOO_BIG, reason="frame over 16 KiB")
            return
        now = time.time()
        try:
            items = decode_frame(data)
        except FrameError as exc:
            metrics.EVENTS_REFUSED.labels(exc.error.code).inc()
            await self.refuse([exc.error])
            return
        try:
            result = await ingest(
                get_runtime(),
                session_id=self.session_id,
                site=self.site_key,
                items=items,
                client=self.client or "",
                now=now,
            )
        except STORE_DOWN:
            # Nothing of this frame was acknowledged: the client keeps it and sends it again.
            await self.store_down()
            return
        if result.acked:
            await self.push_frame({"type": "ack", "ids": result.acked})
        if result.errors:
            await self.refuse(result.errors)

    async def refuse(self, errors: list[ProtocolError]) -> None:
        for error in errors:
            await self.push_frame(error.frame())
            if error.code != "rate_limited":
                self.errors += 1
        if self.errors > MAX_ERRORS:
            metrics.CONNECTIONS_CLOSED.labels(str(CLOSE_TOO_MANY_ERRORS)).inc()
            await self.close(code=CLOSE_TOO_MANY_ERRORS, reason="too many errors")

    async def store_down(self) -> None:
        log.warning("closing a collector socket: the session store failed", exc_info=True)
        metrics.CONNECTIONS_CLOSED.labels(str(CLOSE_STORE_DOWN)).inc()
        await self.close(code=CLOSE_STORE_DOWN, reason="session store unavailable, try again")

    async def websocket_disconnect(self, _message: dict[str, Any]) -> None:
        await self.leave()
        raise StopConsumer()

    async def leave(self) -> None:
        """Leave delivery and the session's group, and give back the client's socket, once,
        however the socket ends."""
        self.outbox.clear()
        self.outbox_bytes = 0
        self.detach()
        if self.client is not None:
            get_runtime().limits.release(self.client)
            self.client = None
        if self.grouped:
            self.grouped = False
            # Redis gone as well: the membership goes with the layer's connection (pubsub) or
            # expires (core); the shopper has left either way.
            with contextlib.suppress(*STORE_DOWN):
                await self.channel_layer.group_discard(
                    session_group(self.session_id), self.channel_name
                )

    async def layer_lost(self) -> None:
        """The channel layer missed messages for this process: the page reconnects and is sent
        its live offer again (offers/layer_reports.py)."""
        metrics.CONNECTIONS_CLOSED.labels(str(CLOSE_STORE_DOWN)).inc()
        await self.close(code=CLOSE_STORE_DOWN, reason="channel layer interrupted, try again")

    async def offer_push(self, message: dict[str, Any]) -> None:
        """An offer from a worker in another process (Redis mode)."""
        self.push(message["text"])

    async def push_frame(self, frame: dict[str, Any]) -> None:
        """Queue a frame of this socket's own (an ack, an error), and let the writer send it
        before this handler goes on."""
        self.push(_encode(frame).decode())
        await asyncio.sleep(0)

    def push(self, data: str) -> None:
        """Delivery's entry point: queue one encoded frame for this socket's writer.

        Never waits on the network. A client whose unsent output would pass `MAX_UNSENT_BYTES`
        does not read what it is sent: it is closed with 1008 and leaves delivery.
        """
        if self.closed or self.gone or self.writer is None:
            return
        self.outbox_bytes += len(data) + FRAME_OVERHEAD
        self.outbox.append(data)
        if self.outbox_bytes > settings.MAX_UNSENT_BYTES and len(self.outbox) > 1:
            self.let_go()
            return
        self.wake.set()

    async def write_out(self) -> None:
        """The socket's writer: sends queued frames in order, then the close asked for, if any."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.outbox:
                data = self.outbox[0]
                try:
                    await self.base_send({"type": "websocket.send", "text": data})
                except Exception:
                    # The connection closed under us: nothing more can reach it.
                    self.gone = True
                    self.detach()
                    return
                if self.outbox:  # `leave` may have emptied it meanwhile
                    self.outbox.popleft()
                    self.outbox_bytes -= len(data) + FRAME_OVERHEAD
            if self.close_after is not None:
                with contextlib.suppress(Exception):
                    await self.base_send(self.close_after)
                return

    def let_go(self) -> None:
        """A client that does not read: drop what it was not sent, leave delivery, close 1008."""
        log.warning(
            "closing a collector socket that does not read (%d bytes unsent)", self.outbox_bytes
        )
        metrics.CONNECTIONS_CLOSED.labels(str(CLOSE_NOT_READING)).inc()
        self.closed = True
        self.outbox.clear()
        self.outbox_bytes = 0
        self.detach()
        # The writer may be waiting on the stalled connection itself: the close skips it.
        self.stop_writer()
        self.writer = asyncio.get_running_loop().create_task(self.close_stalled())

    async def close_stalled(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await self.base_send(
                    {"type": "websocket.close", "code": CLOSE_NOT_READING, "reason": "not reading"}
                )
        except Exception:
            # A server that waits for the client to read before closing: the consumer ends
            # without it, and the server drops the connection when the consumer is gone.
            self.gone = True
            self.stopped.set()

    def detach(self) -> None:
        """Leave delivery now (the session's group is left when the consumer ends)."""
        if self.attached:
            self.attached = False
            get_runtime().delivery.detach(self.session_id, self)

    def stop_writer(self) -> None:
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()


class DashboardConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    """`/ws/dashboard/`: live stats and decisions for staff; anyone else is refused with 403."""

    login_check_seconds = LOGIN_CHECK_SECONDS
    accepted = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except STORE_DOWN:
            # Redis is away or coming back (the pub/sub layer subscribes as the socket opens):
            # a close the dashboard understands, which shows "Reconnecting…" and tries again,
            # rather than an internal error.
            log.warning("closing a dashboard socket: Redis failed", exc_info=True)
            with contextlib.suppress(Exception):
                if not self.accepted:
                    await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_STORE_DOWN})

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True

    async def connect(self) -> None:
        self.watcher: asyncio.Task[None] | None = None
        if not own_origin(self.scope) or not await database_sync_to_async(is_operator)(
            self.scope.get("user")
        ):
            await self.close()  # before accept: the handshake is answered 403
            return
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        snapshot = await get_runtime().feed.snapshot()
        await self.accept()
        await self.send(text_data=snapshot)
        self.watcher = asyncio.create_task(self._watch_login())

    async def _watch_login(self) -> None:
        """Close the socket within a few seconds of its user's logout (or losing the right)."""
        while True:
            await asyncio.sleep(self.login_check_seconds)
            try:
                still = await database_sync_to_async(self._still_operator)()
            except Exception:
                log.exception("could not check the dashboard's login; checking again later")
                continue
            if not still:
                await self.close(code=CLOSE_LOGGED_OUT)
                return

    def _still_operator(self) -> bool:
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        engine = import_module(settings.SESSION_ENGINE)
        if not key or not engine.SessionStore().exists(key):
            return False  # logged out: the session was flushed
        user = self.scope.get("user")  # a lazy object: its pk, never its class
        pk = getattr(user, "pk", None)
        fresh = get_user_model()._default_manager.filter(pk=pk).first() if pk else None
        return is_operator(fresh)

    async def disconnect(self, _code: int) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
        with contextlib.suppress(*STORE_DOWN):
            await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass  # the dashboard only listens

    async def dashboard_frame(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["text"])
