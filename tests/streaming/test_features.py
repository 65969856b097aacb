from __future__ import annotations

from pathlib import Path

import numpy as np

from streaming.features import FEATURE_NAMES, FEATURES, as_dict, feature_matrix, feature_row
from streaming.state import SessionState
from tests.factories import T0

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_feature_is_documented_in_the_readme():
    readme = README.read_text()
    for name, meaning in FEATURES.items():
        assert f"| `{name}` | {meaning} |" in readme


def test_features_describe_a_comparing_shopper(shopper_with_full_cart: SessionState):
    row = as_dict(feature_row(shopper_with_full_cart, T0 + 34))
    assert row["cart_value"] == 40.0 and row["cart_lines"] == 1 and row["cart_quantity"] == 2
    assert row["views_since_add"] == 1 and row["seconds_since_add"] == 31
    assert row["session_seconds"] == 34 and row["distinct_products"] == 2
    assert row["hidden"] == 0 and row["checkout_started"] == 0
    assert row["hour_of_day"] == 16  # T0 is 2025-11-24 16:00 UTC


def test_a_batch_is_one_float32_matrix_in_feature_order(shopper_with_full_cart):
    idle = SessionState("s-2", "demo", started_at=T0, last_seen=T0, last_activity=T0)
    matrix = feature_matrix([shopper_with_full_cart, idle], T0 + 34)
    assert matrix.shape == (2, len(FEATURE_NAMES)) and matrix.dtype == np.float32
    assert matrix[0, FEATURE_NAMES.index("cart_value")] == 40.0
    assert matrix[1, FEATURE_NAMES.index("cart_value")] == 0.0
    assert matrix[1, FEATURE_NAMES.index("seconds_since_add")] == 34  # never added: since the start
