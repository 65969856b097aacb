from __future__ import annotations

from streaming.delivery import LocalDelivery


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[str] = []

    def push(self, data: str) -> None:
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


class BrokenSocket:
    def push(self, _data: str) -> None:
        raise ConnectionResetError("the client disconnected")


async def test_a_socket_that_fails_is_counted_and_let_go_and_the_others_get_their_frames():
    failures: list[int] = []
    delivery = LocalDelivery(on_failure=lambda: failures.append(1))
    broken, tab, stranger = BrokenSocket(), FakeSocket(), FakeSocket()
    delivery.attach("s1", broken)
    delivery.attach("s1", tab)
    delivery.attach("s2", stranger)
    assert await delivery.deliver_many([("s1", "a"), ("s2", "b"), ("s1", "c")]) == 3
    assert tab.frames == ["a", "c"] and stranger.frames == ["b"]
    assert failures == [1] and delivery.open_sockets() == 2
    assert await delivery.deliver("s1", "d") == 1
