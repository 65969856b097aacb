"""How frames reach a session's open sockets.

Embedded mode keeps a registry of the sockets open in this process and writes to them directly,
which costs one write per socket; a channel layer (Redis mode) sits behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol


class Socket(Protocol):
    async def push(self, data: str) -> None: ...


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
    def __init__(self) -> None:
        self._sockets: dict[str, set[Socket]] = {}
        self._count = 0

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
        sockets = list(self._sockets.get(session_id, ()))
        for socket in sockets:
            await socket.push(data)
        return len(sockets)

    def open_sockets(self) -> int:
        return self._count
