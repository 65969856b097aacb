"""How frames reach a session's open sockets.

Embedded mode keeps a registry of the sockets open in this process and hands frames to them
directly (`LocalDelivery`). Redis mode reaches them through the channel layer (`LayerDelivery`),
since a session's sockets may be held by any server.

A socket's `push` only queues the frame for that socket's own writer and returns: it never waits
on the network, so a shopper who stops reading holds up nobody else's offer. A socket that fails
is counted and skipped; the others of the batch still get their frames.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import redis.asyncio as aioredis


log = logging.getLogger(__name__)


class Socket(Protocol):
    def push(self, data: str) -> None:
        """Queue one encoded frame for sending, and return at once (never waits on the network)."""


class Delivery(ABC):
    @abstractmethod
    def attach(self, session_id: str, socket: Socket) -> None: ...

    @abstractmethod
    def detach(self, session_id: str, socket: Socket) -> None: ...

    @abstractmethod
    async def deliver(self, session_id: str, data: str) -> int:
        """Send one encoded frame to every open socket of the session; returns how many."""

    async def deliver_many(self, frames: Sequence[tuple[str, str]]) -> int:
        """`deliver` each (session id, frame) of a batch, in order; returns the sockets reached."""
        reached = 0
        for session_id, data in frames:
            reached += await self.deliver(session_id, data)
        return reached

    @abstractmethod
    def open_sockets(self) -> int: ...


class LocalDelivery(Delivery):
    def __init__(self, *, on_failure: Callable[[], None] | None = None) -> None:
        self._sockets: dict[str, set[Socket]] = {}
        self._count = 0
        # Called once a socket that failed to take a frame (to count it).
        self._on_failure = on_failure

    def attach(self, session_id: str, socket: Socket) -> None:
        sockets = self._sockets.setdefault(session_id, set())
        if socket not in sockets:
            sockets.add(socket)
            self._count += 1

    def detach(self, session_id: str, socket: Socket) -> None:
        sockets = self._sockets.get(session_id)
        if sockets is None or socket not in sockets:
            return
        sockets.discard(socket)
        self._count -= 1
        if not sockets:
            del self._sockets[session_id]

    async def deliver(self, session_id: str, data: str) -> int:
        return await self.deliver_many(((session_id, data),))

    async def deliver_many(self, frames: Sequence[tuple[str, str]]) -> int:
        reached = 0
        for session_id, data in frames:
            reached += self._hand(session_id, data)
        # One turn of the loop for the sockets' writers, so that the frames are on their way
        # when this returns, before whatever the caller does next (reasons, a garbage
        # collection between pauses) holds the loop.
        await asyncio.sleep(0)
        return reached

    def _hand(self, session_id: str, data: str) -> int:
        """Queue the frame on each of the session's sockets; a socket that fails is detached."""
        sockets = self._sockets.get(session_id)
        if not sockets:
            return 0
        reached = 0
        for socket in list(sockets):
            try:
                socket.push(data)
            except Exception:
                log.warning("a socket of session %s failed; detached", session_id, exc_info=True)
                self.detach(session_id, socket)
                if self._on_failure is not None:
                    self._on_failure()
            else:
                reached += 1
        return reached

    def open_sockets(self) -> int:
        return self._count


def session_group(session_id: str) -> str:
    """The channel-layer group of a session's open sockets (Redis mode)."""
    return f"lo.session.{session_id}"


@runtime_checkable
class LayerSocket(Socket, Protocol):
    async def layer_lost(self) -> None:
        """The channel layer may have lost messages for this socket: close it, to reconnect."""


class LayerDelivery(Delivery):
    """Redis mode: a session's sockets may be held by any server; the channel layer reaches them.

    Each collector socket joins its session's group itself; this process keeps its own sockets,
    to count them and to close them when its subscriber to the layer fails (offers/layer_reports.py).
    """

    def __init__(
        self, channel_layer: Callable[[], Any], publisher: aioredis.Redis | None = None
    ) -> None:
        self._sockets: set[Socket] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._channel_layer = channel_layer
        self._publisher = publisher

    def attach(self, session_id: str, socket: Socket) -> None:  # noqa: ARG002  # Delivery's signature
        self._sockets.add(socket)

    def detach(self, session_id: str, socket: Socket) -> None:  # noqa: ARG002  # Delivery's signature
        self._sockets.discard(socket)

    async def deliver(self, session_id: str, data: str) -> int:
        await self._channel_layer().group_send(
            session_group(session_id), {"type": "offer.push", "text": data}
        )
        return 1

    async def deliver_many(self, frames: Sequence[tuple[str, str]]) -> int:
        """A batch's offers in one round trip on the pub/sub layer, rather than one each.

        The pub/sub layer's `group_send` is a PUBLISH of the serialized message on the group's
        Redis channel, under a lock, one round trip a message: 2,000 offers took about a second.
        Here the same PUBLISHes go out in one pipeline, in order. Other layers (and a lone offer)
        go through `group_send`.
        """
        from channels_redis.pubsub import RedisPubSubChannelLayer

        channel_layer = self._channel_layer()
        if (
            len(frames) < 2
            or self._publisher is None
            or not isinstance(channel_layer, RedisPubSubChannelLayer)
        ):
            return await super().deliver_many(frames)
        async with self._publisher.pipeline(transaction=False) as pipe:
            for session_id, data in frames:
                pipe.publish(
                    channel_layer._get_group_channel_name(session_group(session_id)),
                    channel_layer.serialize({"type": "offer.push", "text": data}),
                )
            await pipe.execute()
        return len(frames)

    def open_sockets(self) -> int:
        return len(self._sockets)

    def layer_lost(self) -> None:
        """What was published to this process until its subscriber is back is lost: its sockets
        close with 4503, and each page, reconnecting, is sent its live offer again."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not from the loop that holds the sockets: none of ours
            return
        for socket in list(self._sockets):
            if isinstance(socket, LayerSocket):
                task = loop.create_task(socket.layer_lost())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
