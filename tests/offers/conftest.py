from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from offers.runtime import Runtime


@pytest.fixture(autouse=True)
def fresh_runtime(runtime: Runtime) -> Runtime:
    """Every test of the app starts with a fresh runtime: nothing live carries over."""
    return runtime
