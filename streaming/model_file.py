"""An uploaded model file, checked before XGBoost reads it.

An uploaded file is read in two passes. Python first parses it (JSON, or UBJSON through a small
bounds-checked reader) and checks what XGBoost itself does not: XGBoost's UBJSON reader trusts
every length it reads, and its predictor trusts every child and feature index of every tree, so a
truncated or corrupted file can crash the whole process instead of raising. Only a file that passed
those checks is handed to XGBoost (`streaming.scoring.load_model`), and the loaded Booster is
checked once more through its own config (`check_booster`). Pickles are never accepted, whatever
they contain.

A model is also bounded: XGBoost's predictor and TreeSHAP recurse once per level of a tree, and
TreeSHAP's time and memory grow with the square of the depth, so a one-tree chain 200,000 levels
deep crashed the process on its first explanation, and one 20,000 deep took 6.8 s and 3.1 GB per
explanation. Trees, nodes and depth are held to the limits below, and every split and leaf value
must be a finite float32. Before a model is stored or activated it is also tried in a process of
its own (`streaming.model_trial`).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from typing import Final, Literal, NoReturn

import numpy as np
import numpy.typing as npt
import xgboost

from streaming.features import FEATURE_NAMES, FEATURES_VERSION

ModelFormat = Literal["json", "ubj"]

OBJECTIVE: Final = "binary:logistic"
BOOSTER: Final = "gbtree"
# Root nodes store "no parent" as -1 with the left-child bit masked off.
_NO_PARENT: Final = frozenset({-1, 2**31 - 1})
_MAX_NESTING: Final = 64

# The limits of a model (README, "Models"). The default trained model has at most 200 trees of
# depth 6 (127 nodes each): these leave ten times that room and more.
MAX_TREES: Final = 2_000
MAX_NODES_PER_TREE: Final = 2**15 - 1  # a full tree of depth 14
MAX_NODES: Final = 500_000  # in all trees together
MAX_DEPTH: Final = 64  # levels of splits below the root
# The largest margin (log-odds) any row could reach: each tree's largest leaf, in absolute value,
# summed. Far beyond any sensible model (a margin of 40 is a probability of 1 in float32), and far
# below float32's overflow, so neither a prediction nor a TreeSHAP value can become inf or NaN.
MAX_MARGIN: Final = 1e6
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
_JSON_START: Final = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*["}]')
_HOW_TO_SAVE: Final = (
    "an XGBoost model saved as JSON or UBJSON only (booster.save_model('model.json') or "
    "'model.ubj'); pickles are refused."
)


class ModelError(ValueError):
    """A model file that cannot serve: the message is written for the operator who uploaded it."""


# --- recognising the file --------------------------------------------------------------------


def sniff_format(raw: bytes) -> ModelFormat:
    """Tell an XGBoost JSON model from an XGBoost UBJSON model; refuse anything else.

    Both start with `{`. In JSON the next meaningful byte opens a quoted key (or closes the
    object); in XGBoost's UBJSON it is `L`, the int64 length marker every key starts with, and
    there is never whitespace. Nothing here unpickles, imports or executes anything.
    """
    if not raw:
        raise ModelError("The file is empty. Upload an XGBoost model saved as JSON or UBJSON.")
    if raw.startswith(b"{L"):
        return "ubj"
    if _JSON_START.match(raw):
        return "json"
    raise ModelError(f"{_what_it_looks_like(raw)} Upload {_HOW_TO_SAVE}")


def _what_it_looks_like(raw: bytes) -> str:
    if raw[:1] == b"\x80":
        return "This file is a Python pickle, which could run any code when loaded."
    if raw.startswith(b"PK\x03\x04"):
        return "This file is a zip archive, not a model."
    if raw.startswith(b"binf"):
        return "This file is in XGBoost's old binary format, which is no longer supported."
    return "This file is not an XGBoost model."


# --- reading it without trusting it -----------------------------------------------------------


def _read_document(raw: bytes, fmt: ModelFormat) -> object:
    if fmt == "ubj":
        return _UBJSONReader(raw).document()
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ModelError(f"The file is not valid JSON ({error}). Upload {_HOW_TO_SAVE}") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Python keeps the last of two equal keys and XGBoost the first: refuse, so that both read
    # the same model.
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return members


# UBJSON scalar markers XGBoost reads, as big-endian struct formats.
_SCALARS: Final = {
    b"d": ">f",
    b"i": ">b",
    b"U": ">B",
    b"I": ">h",
    b"l": ">i",
    b"L": ">q",
    b"C": ">b",
}
_TYPED_ARRAYS: Final = {b"d": ">f4", b"U": ">u1", b"l": ">i4", b"L": ">i8"}


class _UBJSONReader:
    """The subset of UBJSON that XGBoost writes and reads, with every length checked."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def document(self) -> object:
        value = self.read_value(0)
        if self.pos != len(self.raw):
            self.fail(f"unexpected data after the model at byte {self.pos}")
        return value

    def fail(self, problem: str) -> NoReturn:
        raise ModelError(
            f"The UBJSON file is damaged or truncated: {problem}. Upload {_HOW_TO_SAVE}"
        )

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.raw):
            self.fail(f"it ends at byte {len(self.raw)} where {size} more bytes were announced")
        chunk = self.raw[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> int | float:
        value: int | float = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def length(self) -> int:
        if self.take(1) != b"L":
            self.fail(f"a length at byte {self.pos - 1} is not an int64")
        size = int(self.unpack(">q"))
        if size < 0:
            self.fail(f"negative length at byte {self.pos - 8}")
        return size

    def text(self) -> str:
        try:
            return self.take(self.length()).decode()
        except UnicodeDecodeError:
            self.fail(f"a string before byte {self.pos} is not UTF-8")

    def read_value(self, depth: int) -> object:
        if depth > _MAX_NESTING:
            self.fail("nested too deeply")
        marker = self.take(1)
        if marker == b"{":
            return self.read_object(depth + 1)
        if marker == b"[":
            return self.read_array(depth + 1)
        if marker == b"S":
            return self.text()
        if marker in _SCALARS:
            return self.unpack(_SCALARS[marker])
        if marker in (b"T", b"F"):
            return marker == b"T"
        if marker == b"Z":
            return None
        self.fail(f"unknown marker {marker!r} at byte {self.pos - 1}")

    def peek(self, expected: bytes) -> bool:
        if self.pos >= len(self.raw):
            self.fail("it ends inside an object or array")
        if self.raw[self.pos : self.pos + 1] == expected:
            self.pos += 1
            return True
        return False

    def read_object(self, depth: int) -> dict[str, object]:
        members: dict[str, object] = {}
        while not self.peek(b"}"):
            key = self.text()
            if key in members:
                self.fail(f"the key {key!r} appears twice in one object")
            members[key] = self.read_value(depth)
        return members

    def read_array(self, depth: int) -> list[object] | npt.NDArray[np.generic]:
        if self.peek(b"$"):
            dtype = _TYPED_ARRAYS.get(self.take(1))
            if dtype is None or self.take(1) != b"#":
                self.fail(f"unsupported typed array at byte {self.pos - 2}")
            count = self.length()
            size = np.dtype(dtype).itemsize
            if count > len(self.raw):  # guards the multiplication below as well
                self.fail(f"an array at byte {self.pos} announces {count} items")
            return np.frombuffer(self.take(count * size), dtype=dtype)
        if self.peek(b"#"):
            count = self.length()
            if count > len(self.raw) - self.pos:  # every item takes at least one byte
                self.fail(f"an array at byte {self.pos} announces {count} items")
            return [self.read_value(depth) for _ in range(count)]
        items: list[object] = []
        while not self.peek(b"]"):
            items.append(self.read_value(depth))
        return items


# --- checking what was read ---------------------------------------------------------------------


def _not_a_model(problem: str) -> ModelError:
    return ModelError(f"This is not an XGBoost model: {problem}. Upload {_HOW_TO_SAVE}")


def _member(node: object, key: str, where: str) -> object:
    if not isinstance(node, dict) or key not in node:
        raise _not_a_model(f"'{where}' has no '{key}'")
    return node[key]


def _section(node: object, key: str, where: str) -> dict[str, object]:
    value = _member(node, key, where)
    if not isinstance(value, dict):
        raise _not_a_model(f"'{where}.{key}' is not an object")
    return value


def _integer(value: object, where: str) -> int:
    # XGBoost keeps model parameters as strings ("16") and indices as numbers.
    try:
        return int(str(value))
    except ValueError:
        raise _not_a_model(f"'{where}' is not an integer") from None


def _int_array(tree: dict[str, object], key: str, nodes: int, where: str) -> npt.NDArray[np.int64]:
    value = _member(tree, key, where)
    try:
        array = np.asarray(value, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise _not_a_model(f"'{where}.{key}' is not a list of integers") from None
    if array.shape != (nodes,):
        raise _not_a_model(f"'{where}.{key}' has {array.size} entries for {nodes} nodes")
    return array


def _check_document(document: object) -> None:
    learner = _section(document, "learner", "the file")
    _check_objective(str(_member(_section(learner, "objective", "learner"), "name", "objective")))
    names = _member(learner, "feature_names", "learner")
    _check_feature_names([str(name) for name in names] if isinstance(names, list) else [])

    params = _section(learner, "learner_model_param", "learner")
    if _integer(params.get("num_class", 0), "num_class") > 1:
        raise ModelError("The model has several classes; a cart-risk model is a binary classifier.")
    if _integer(params.get("num_target", 1), "num_target") != 1:
        raise ModelError("The model predicts several targets; a cart-risk model predicts one.")
    num_feature = _integer(_member(params, "num_feature", "learner_model_param"), "num_feature")
    if num_feature != len(FEATURE_NAMES):
        raise ModelError(
            f"The model expects {num_feature} features; the live feature list has "
            f"{len(FEATURE_NAMES)}."
        )

    booster = _section(learner, "gradient_booster", "learner")
    if booster.get("name") != BOOSTER:
        raise ModelError(
            f"The model uses the {booster.get('name')!r} booster; only tree models "
            f"(booster='{BOOSTER}') are supported."
        )
    _check_trees(_section(booster, "model", "gradient_booster"), num_feature)


def _check_objective(objective: str) -> None:
    if objective == OBJECTIVE:
        return
    hint = {
        "binary:logitraw": "it outputs log-odds rather than probabilities",
        "binary:hinge": "it outputs 0 or 1 rather than probabilities",
    }.get(objective)
    if hint is None:
        kind = objective.split(":", 1)[0]
        hint = {
            "reg": "it is a regression model",
            "multi": "it is a multi-class model",
            "rank": "it is a ranking model",
            "survival": "it is a survival model",
            "count": "it is a count model",
        }.get(kind, "it is not a binary classifier")
    raise ModelError(
        f"The model's objective is {objective!r}: {hint}. A cart-risk model must be a binary "
        f"classifier trained with objective='{OBJECTIVE}', whose output is a probability."
    )


def _check_feature_names(names: Sequence[str]) -> None:
    expected = list(FEATURE_NAMES)
    if list(names) == expected:
        return
    intro = (
        f"The model's feature names must be exactly the live feature list "
        f"(version {FEATURES_VERSION}, {len(expected)} names: {', '.join(expected)})."
    )
    if not names:
        raise ModelError(
            f"{intro} This model has no feature names: train it on "
            "xgboost.DMatrix(X, feature_names=FEATURE_NAMES)."
        )
    missing = [name for name in expected if name not in names]
    extra = [name for name in names if name not in expected]
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected: {', '.join(extra)}")
    if len(set(names)) != len(names):
        problems.append("some names appear twice")
    if not problems:
        position, found, wanted = next(
            (i, got, want)
            for i, (got, want) in enumerate(zip(names, expected, strict=True))
            if got != want
        )
        problems.append(f"out of order: position {position + 1} holds {found!r}, not {wanted!r}")
    raise ModelError(f"{intro} This model's names differ: {'; '.join(problems)}.")


def _check_trees(model: dict[str, object], num_feature: int) -> None:
    trees = _member(model, "trees", "gradient_booster.model")
    if not isinstance(trees, list) or not trees:
        raise _not_a_model("it holds no trees")
    if len(trees) > MAX_TREES:
        raise ModelError(f"The model has {len(trees):,} trees; the limit is {MAX_TREES:,}.")
    groups = _member(model, "tree_info", "gradient_booster.model")
    if not isinstance(groups, list | np.ndarray) or list(groups) != [0] * len(trees):
        # Every tree must add to output 0; any other group index makes XGBoost write out of bounds.
        raise _not_a_model("'tree_info' does not describe a model with one output")
    for index, tree in enumerate(trees):
        if not isinstance(tree, dict):
            raise _not_a_model(f"tree {index} is not an object")
    # Counted before any tree is read further, so an oversized model costs nothing more.
    sizes = [_num_nodes(tree, f"tree {index}") for index, tree in enumerate(trees)]
    if sum(sizes) > MAX_NODES:
        raise ModelError(
            f"The model has {sum(sizes):,} nodes in all its trees; the limit is {MAX_NODES:,}."
        )
    margin = 0.0
    for index, (tree, nodes) in enumerate(zip(trees, sizes, strict=True)):
        margin += _check_tree(tree, nodes, num_feature, f"tree {index}")
    if margin > MAX_MARGIN:
        raise ModelError(
            f"The model's leaves add up to a margin of up to {margin:.3g} (log-odds: each tree's "
            f"largest leaf value, summed); the limit is {MAX_MARGIN:.0e}."
        )


def _num_nodes(tree: dict[str, object], where: str) -> int:
    param = _section(tree, "tree_param", where)
    nodes = _integer(_member(param, "num_nodes", where), f"{where}.num_nodes")
    if nodes < 1:
        raise _not_a_model(f"{where} has no nodes")
    if nodes > MAX_NODES_PER_TREE:
        raise ModelError(
            f"The model's {where} has {nodes:,} nodes; the limit is {MAX_NODES_PER_TREE:,} a tree."
        )
    return nodes


def _check_tree(tree: dict[str, object], nodes: int, num_feature: int, where: str) -> float:
    """Every index the predictor will follow stays inside the tree, the tree is a tree within
    MAX_DEPTH, and its values are finite; its largest leaf value, in absolute value."""
    param = _section(tree, "tree_param", where)
    if _integer(param.get("size_leaf_vector", 1), f"{where}.size_leaf_vector") > 1:
        raise ModelError("The model has vector leaves (several outputs); it needs one output.")
    left = _int_array(tree, "left_children", nodes, where)
    right = _int_array(tree, "right_children", nodes, where)
    parents = _int_array(tree, "parents", nodes, where)
    features = _int_array(tree, "split_indices", nodes, where)
    if "split_type" in tree and np.any(_int_array(tree, "split_type", nodes, where) != 0):
        raise ModelError("The model has categorical splits; the live features are all numeric.")
    values = _member(tree, "default_left", where)
    if not isinstance(values, list | np.ndarray) or len(values) != nodes:
        raise _not_a_model(f"'{where}.default_left' does not have {nodes} entries")
    # For a leaf, XGBoost keeps its value in split_conditions.
    conditions = _float_array(tree, "split_conditions", nodes, where)
    weights = _float_array(tree, "base_weights", nodes, where)
    gains = _float_array(tree, "loss_changes", nodes, where)
    covers = _float_array(tree, "sum_hessian", nodes, where)

    depth = _check_links(
        left.tolist(), right.tolist(), parents.tolist(), features.tolist(), num_feature, where
    )
    if depth > MAX_DEPTH:
        raise ModelError(
            f"The model's {where} is {depth:,} levels deep; the limit is a depth of {MAX_DEPTH}."
        )
    leaves = left == -1
    if not np.max(np.abs([conditions, weights, gains, covers])) <= _FLOAT32_MAX:  # NaN is not
        _check_finite(conditions, "leaf value", where, skip=~leaves)
        _check_finite(conditions, "split threshold", where, skip=leaves)
        _check_finite(weights, "weight (base_weights)", where)
        _check_finite(gains, "gain (loss_changes)", where)
        _check_finite(covers, "cover (sum_hessian)", where)
    # TreeSHAP divides by the cover of every split: zero makes every explanation NaN.
    uncovered = np.flatnonzero(~leaves & ~(covers > 0))
    if uncovered.size:
        node = int(uncovered[0])
        raise ModelError(
            f"The model's {where}, node {node}: its cover (sum_hessian) is {covers[node]:g}; "
            "a split's cover must be above 0."
        )
    return float(np.max(np.abs(conditions[leaves]), initial=0.0))


def _float_array(
    tree: dict[str, object], key: str, nodes: int, where: str
) -> npt.NDArray[np.float64]:
    value = _member(tree, key, where)
    if not isinstance(value, list | np.ndarray):
        raise _not_a_model(f"'{where}.{key}' is not a list of numbers")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise _not_a_model(f"'{where}.{key}' is not a list of numbers") from None
    if array.shape != (nodes,):
        raise _not_a_model(f"'{where}.{key}' has {array.size} entries for {nodes} nodes")
    return array


def _check_finite(
    values: npt.NDArray[np.float64],
    what: str,
    where: str,
    skip: npt.NDArray[np.bool_] | None = None,
) -> None:
    """Every value (but those in `skip`) is a number that stays finite as XGBoost's float32."""
    bad = ~(np.abs(values) <= _FLOAT32_MAX)  # NaN compares False
    if skip is not None:
        bad &= ~skip
    found = np.flatnonzero(bad)
    if found.size:
        node = int(found[0])
        raise ModelError(
            f"The model's {where}, node {node}: its {what} is {values[node]:g}; every split, "
            "leaf and statistic of a tree must be a finite number."
        )


def _check_links(
    left: list[int],
    right: list[int],
    parents: list[int],
    features: list[int],
    num_feature: int,
    where: str,
) -> int:
    """A walk from the root meets each node once, through in-range children and features.

    The tree's depth: the most splits on a path from the root to a leaf. The walk keeps its own
    stack, so a deep tree costs no recursion here.
    """
    nodes = len(left)
    if parents[0] not in _NO_PARENT:
        raise _not_a_model(f"{where}: its root has a parent")
    seen = [False] * nodes
    seen[0] = True
    stack = [(0, 0)]  # (node, its depth)
    deepest = 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = (left[node], right[node])
        if children == (-1, -1):
            continue
        for child in children:
            if not 0 < child < nodes or seen[child] or parents[child] != node:
                raise _not_a_model(f"{where}: node {node} has an invalid child {child}")
            seen[child] = True
            stack.append((child, depth + 1))
        if not 0 <= features[node] < num_feature:
            raise _not_a_model(f"{where}: node {node} splits on feature {features[node]}")
    return deepest


def check_booster(booster: xgboost.Booster) -> None:
    """The same contract, as XGBoost itself understood the file."""
    config = json.loads(booster.save_config())
    _check_objective(str(config["learner"]["objective"]["name"]))
    _check_feature_names(booster.feature_names or [])
    probe = booster.inplace_predict(np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32))
    if np.shape(probe) != (1,) or not 0.0 <= float(probe[0]) <= 1.0:
        raise ModelError("The model does not output one probability per row.")


def check_model_file(raw: bytes) -> ModelFormat:
    """The file's format, once its document passed every check; ModelError saying why not."""
    fmt = sniff_format(raw)
    _check_document(_read_document(raw, fmt))
    return fmt
