from __future__ import annotations

import pytest

from streaming.state import SessionState
from tests.factories import T0, event


@pytest.fixture
def fresh_session() -> SessionState:
    return SessionState("s-1", "demo", started_at=T0, last_seen=T0, last_activity=T0)


@pytest.fixture
def shopper_with_full_cart(fresh_session: SessionState) -> SessionState:
    """Viewed a product, put it in the cart twice over, then compared another one."""
    s = fresh_session
    s.apply(event("e1", "page_view", url="/"), T0 + 1)
    s.apply(event("e2", "product_view", product_id="sku-1", price=20.0), T0 + 2)
    s.apply(event("e3", "add_to_cart", product_id="sku-1", price=20.0, quantity=2), T0 + 3)
    s.apply(event("e4", "product_view", product_id="sku-2", price=35.5), T0 + 4)
    return s
