"""Every number a shopper sends is bounded so that what is derived from it fits the record."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from offers.models import Decision
from streaming.protocol import MAX_PRICE, MAX_QUANTITY
from streaming.state import MAX_CART_LINES, CartFull, SessionState
from tests.factories import T0, event
from tests.subprocesses import manage, project_env
from tests.test_services import postgres_url  # noqa: F401  (a fixture)

LARGEST_CART = Decimal(MAX_CART_LINES * MAX_QUANTITY * MAX_PRICE)


def fullest_cart() -> SessionState:
    """A shopper who adds every line the cart holds, each at the top price and quantity, twice."""
    state = SessionState("s-max", "demo", started_at=T0, last_seen=T0, last_activity=T0)
    for line in range(MAX_CART_LINES):
        for again in range(2):
            add = event(
                f"e-{line}-{again}",
                "add_to_cart",
                product_id=f"sku-{line}",
                price=MAX_PRICE,
                quantity=MAX_QUANTITY,
            )
            state.apply(add, T0 + line)
    with pytest.raises(CartFull):
        state.apply(event("e-more", "add_to_cart", product_id="sku-x", price=1), T0 + 99)
    return state


def test_the_fullest_cart_is_the_largest_the_bounds_allow():
    state = fullest_cart()
    assert state.cart_quantity == MAX_CART_LINES * MAX_QUANTITY
    assert Decimal(str(round(state.cart_value, 2))) == LARGEST_CART


def test_the_cart_value_column_holds_the_largest_cart():
    field = Decision._meta.get_field("cart_value")
    whole_digits = field.max_digits - field.decimal_places
    assert Decimal(10) ** whole_digits > LARGEST_CART
    # And every feature derived from the cart is finite as the model reads it (float32).
    assert float(LARGEST_CART) < 3.4e38


@pytest.mark.django_db
def test_a_decision_on_the_largest_cart_is_stored_and_read_back_exactly(demo_site):
    state = fullest_cart()
    decision = Decision.objects.create(
        site=demo_site,
        session=state.session_id,
        pause_key=state.pause_key,
        at=dt.datetime(2026, 11, 24, 18, 0, tzinfo=dt.UTC),
        outcome="no_offer",
        features={"cart_value": state.cart_value},
        cart_value=Decimal(str(round(state.cart_value, 2))),
    )
    decision.refresh_from_db()
    assert decision.cart_value == LARGEST_CART


STORE_LARGEST = (
    "import datetime as dt; from decimal import Decimal; "
    "from offers.models import Decision, Site; "
    "site = Site.objects.create(key='big', name='Big'); "
    "d = Decision.objects.create(site=site, session='s', pause_key='s:1', "
    "at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), outcome='no_offer', cart_value=Decimal('{v}')); "
    "d.refresh_from_db(); print(d.cart_value)"
)


@pytest.mark.services
def test_postgresql_stores_the_largest_cart_value(postgres_url):  # noqa: F811
    env = project_env(DATABASE_URL=postgres_url)
    migrate = manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    largest = f"{LARGEST_CART:.2f}"
    stored = manage("shell", "-v", "0", "-c", STORE_LARGEST.format(v=largest), env=env)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.strip() == largest
