"""Hostile model files: a small real model's JSON, edited as an attacker or a broken exporter would.

`deep_model(1_000)` is the small model with its first tree replaced by one path of 1,000 splits,
like the chain of the attack (200,000 deep) that crashed TreeSHAP; `edited_model(edit)` applies
any change to the document.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from streaming.features import FEATURE_NAMES

Document = dict[str, Any]
VIEWS_SINCE_ADD = FEATURE_NAMES.index("views_since_add")


@functools.cache
def _small_json() -> bytes:
    import xgboost

    from tests.factories import small_model

    booster = xgboost.Booster()
    booster.load_model(bytearray(small_model()))
    return bytes(booster.save_raw("json"))


def model_document() -> Document:
    """A fresh copy of the small real model (tests.factories.small_model) as a JSON document."""
    document: Document = json.loads(_small_json())
    return document


def trees(document: Document) -> list[Document]:
    found: list[Document] = document["learner"]["gradient_booster"]["model"]["trees"]
    return found


def first_leaf(tree: Document) -> int:
    return int(tree["left_children"].index(-1))


def edited_model(edit: Callable[[Document], object]) -> bytes:
    """The small model, as JSON, after `edit(document)`."""
    document = model_document()
    edit(document)
    return json.dumps(document).encode()


def chain(depth: int) -> Document:
    """A tree that is one path of `depth` splits on views_since_add: split k (node 2k) sends a
    row with fewer than k + 0.5 views to a leaf, the others one level deeper; the last node is a
    leaf too. A row with `depth` views or more walks the whole path."""
    nodes = 2 * depth + 1
    left, right = [-1] * nodes, [-1] * nodes
    parents = [2**31 - 1] + [0] * (nodes - 1)
    conditions = [0.0] * nodes
    covers = [1.0] * nodes
    for k in range(depth):
        split = 2 * k
        left[split], right[split] = split + 1, split + 2
        parents[split + 1] = parents[split + 2] = split
        conditions[split] = k + 0.5
        conditions[split + 1] = 0.01 if k % 2 else -0.01  # a leaf's value
        covers[split] = float(depth - k + 1)
    conditions[-1] = 0.02
    return {
        "base_weights": conditions[:],
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": [0] * nodes,
        "id": 0,
        "left_children": left,
        "loss_changes": [1.0 if child != -1 else 0.0 for child in left],
        "parents": parents,
        "right_children": right,
        "split_conditions": conditions,
        "split_indices": [VIEWS_SINCE_ADD if child != -1 else 0 for child in left],
        "split_type": [0] * nodes,
        "sum_hessian": covers,
        "tree_param": {
            "num_deleted": "0",
            "num_feature": str(len(FEATURE_NAMES)),
            "num_nodes": str(nodes),
            "size_leaf_vector": "1",
        },
    }


def deep_model(depth: int) -> bytes:
    """The small model with its first tree replaced by `chain(depth)`, as JSON."""

    def deepen(document: Document) -> None:
        trees(document)[0] = chain(depth)

    return edited_model(deepen)


def many_trees(count: int) -> bytes:
    """The small model with its first tree repeated to make `count` trees, as JSON."""

    def repeat(document: Document) -> None:
        model = document["learner"]["gradient_booster"]["model"]
        first = trees(document)[0]
        model["trees"] = [dict(first, id=i) for i in range(count)]
        model["tree_info"] = [0] * count
        model["iteration_indptr"] = list(range(count + 1))
        model["gbtree_model_param"]["num_trees"] = str(count)

    return edited_model(repeat)
