from __future__ import annotations

from streaming.delivery import LocalDelivery


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[str] = []

    async def push(self, data: str) -> None:
        self.frames.append(data)


async def test_a_frame_reaches_every_open_socket_of_its_session_only():
    delivery = LocalDelivery()
    tab1, tab2, stranger = FakeSocket(), FakeSocket(), FakeSocket()
    delivery.attach("s1", tab1)
    delivery.attach("s1", tab2)
    delivery.attach("s2", stranger)
    assert await delivery.deliver("s1", '{"type":"offer"}') == 2
    assert tab1.frames == tab2.frames == ['{"type":"offer"}']
    assert stranger.frames == []
    assert delivery.open_sockets() == 3


async def test_a_detached_socket_gets_nothing():
    delivery = LocalDelivery()
    tab = FakeSocket()
    delivery.attach("s1", tab)
    delivery.attach("s1", tab)
    delivery.detach("s1", tab)
    delivery.detach("s1", tab)
    assert await delivery.deliver("s1", "x") == 0
    assert delivery.open_sockets() == 0
