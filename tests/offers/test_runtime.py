"""What a process's loop says it is when it starts: a worker that decides, or a front end."""

from __future__ import annotations

import asyncio
import logging

import pytest

from offers.runtime import build_runtime


@pytest.mark.parametrize(
    ("decides", "said"),
    [(True, "stream worker started: deciding pauses"), (False, "no pauses decided here")],
)
async def test_the_loop_says_whether_it_decides_pauses(caplog, decides: bool, said: str):
    runtime = build_runtime(decides=decides)
    worker = runtime.worker
    worker.steps = []  # only its start is looked at here
    with caplog.at_level(logging.INFO, logger="streaming.worker"):
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.05)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert said in caplog.text
    assert ("deciding pauses" in caplog.text) is decides
