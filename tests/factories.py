"""Builders for test data, going through the real decoder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from streaming.protocol import Event, decode_frame

if TYPE_CHECKING:
    from offers.models import ScoringModel

T0 = 1_764_000_000.0


def event(event_id: str, name: str, **props: object) -> Event:
    frame = msgspec.json.encode({"type": "track", "id": event_id, "event": name, "props": props})
    (item,) = decode_frame(frame)
    assert isinstance(item, Event), item
    return item


def track(event_id: str, name: str, **props: object) -> dict[str, object]:
    return {"type": "track", "id": event_id, "event": name, "props": props}


def small_model(*, seed: int = 42, rounds: int = 20, steepness: float = 1.0) -> bytes:
    """A small real XGBoost model (UBJSON) on the live features: risk grows with comparing.

    Sessions that viewed more than about three products since their last add score high.
    """
    import numpy as np
    import xgboost

    from streaming.features import FEATURE_NAMES

    views = FEATURE_NAMES.index("views_since_add")
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 10, size=(3000, len(FEATURE_NAMES))).astype(np.float32)
    risk = 1 / (1 + np.exp(-(X[:, views] - 3) * steepness))
    y = (rng.random(len(X)) < risk).astype(np.float32)
    data = xgboost.DMatrix(X, y, feature_names=list(FEATURE_NAMES))
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": seed}
    return bytes(xgboost.train(params, data, num_boost_round=rounds).save_raw("ubj"))


def comparing_shopper(session: str, *, views: int = 8) -> list[Event]:
    """Adds a product to the cart, then compares `views` others."""
    events = [event(f"{session}-add", "add_to_cart", product_id="sku-1", price=120.0)]
    events += [
        event(f"{session}-v{i}", "product_view", product_id=f"sku-{i + 2}", price=110.0)
        for i in range(views)
    ]
    return events


def stored_model(seed: int = 1) -> ScoringModel:
    """A small model in the registry, as a candidate."""
    from offers.services import model_create
    from streaming.features import FEATURE_NAMES

    return model_create(
        artifact=small_model(seed=seed),
        artifact_format="ubj",
        feature_names=list(FEATURE_NAMES),
        metrics={"auc": 0.9},
    )


def operator_user(username: str = "olga", *, permission: bool = True) -> Any:
    """A staff user who may see the operator side (or, without `permission`, staff alone)."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password="x", is_staff=True)
    if permission:
        user.user_permissions.add(Permission.objects.get(codename="view_decision"))
    return user
