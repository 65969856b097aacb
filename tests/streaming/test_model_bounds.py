"""Models are bounded: trees, nodes and depth within the limits, every value finite, and a trial
in a process of its own before a model may serve."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
import xgboost

from streaming import model_file, model_trial, training
from streaming.features import FEATURE_NAMES
from streaming.model_file import MAX_DEPTH, MAX_NODES_PER_TREE, MAX_TREES, ModelError
from streaming.model_trial import TRIAL_ROWS, trial_model, trial_rows
from streaming.scoring import load_model
from tests.factories import small_model
from tests.hostile_models import (
    Document,
    deep_model,
    edited_model,
    first_leaf,
    many_trees,
    model_document,
    trees,
)

# --- depth, trees, nodes ----------------------------------------------------------------------


def test_a_tree_at_the_depth_limit_loads_scores_and_explains() -> None:
    scorer = load_model(deep_model(MAX_DEPTH), label="x")
    rows = np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32)
    rows[1, FEATURE_NAMES.index("views_since_add")] = 10_000  # walks all 64 splits

    assert scorer.predict_proba(rows).shape == (2,)
    assert np.isfinite(scorer.contributions(rows)).all()


def test_a_tree_one_level_past_the_limit_is_refused() -> None:
    with pytest.raises(ModelError, match="tree 0 is 65 levels deep; the limit is a depth of 64"):
        load_model(deep_model(MAX_DEPTH + 1), label="x")


def test_a_chain_1000_deep_is_refused_naming_the_limit() -> None:
    with pytest.raises(ModelError, match="tree 0 is 1,000 levels deep; the limit is a depth of 64"):
        load_model(deep_model(1_000), label="x")


def test_the_depth_is_measured_without_recursion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_file, "MAX_NODES_PER_TREE", 10**6)

    with pytest.raises(ModelError, match="10,000 levels deep"):
        model_file.check_model_file(deep_model(10_000))  # Python recurses 1,000 deep


def test_a_chain_20000_deep_is_refused_by_its_nodes_before_its_depth() -> None:
    with pytest.raises(ModelError, match="tree 0 has 40,001 nodes; the limit is 32,767 a tree"):
        load_model(deep_model(20_000), label="x")


@pytest.mark.slow
def test_the_chain_of_the_attack_is_refused_before_xgboost_reads_it() -> None:
    raw = deep_model(200_000)  # 16 MB of JSON, as uploaded
    assert len(raw) > 10 * 2**20

    with pytest.raises(ModelError, match="400,001 nodes; the limit is 32,767"):
        load_model(raw, label="x")


def test_a_model_with_one_tree_too_many_is_refused() -> None:
    with pytest.raises(ModelError, match="2,001 trees; the limit is 2,000"):
        load_model(many_trees(MAX_TREES + 1), label="x")


@pytest.mark.slow
def test_a_model_with_as_many_trees_as_the_limit_passes_the_checks() -> None:
    assert model_file.check_model_file(many_trees(MAX_TREES)) == "json"


def test_a_model_with_too_many_nodes_in_all_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = small_model()  # 20 trees of at most 15 nodes
    nodes = sum(int(tree["tree_param"]["num_nodes"]) for tree in trees(model_document()))
    monkeypatch.setattr(model_file, "MAX_NODES", nodes - 1)

    with pytest.raises(
        ModelError, match=f"{nodes} nodes in all its trees; the limit is {nodes - 1}"
    ):
        load_model(raw, label="x")


def test_the_default_training_stays_far_within_the_limits() -> None:
    defaults = inspect.signature(training.train_booster).parameters
    depth, rounds = defaults["max_depth"].default, defaults["rounds"].default

    assert depth <= MAX_DEPTH and rounds <= MAX_TREES
    assert 2 ** (depth + 1) - 1 <= MAX_NODES_PER_TREE  # a full tree of that depth
    assert rounds * (2 ** (depth + 1) - 1) <= model_file.MAX_NODES


# --- values -------------------------------------------------------------------------------------


def set_leaf(value: float) -> Callable[[Document], None]:
    def edit(document: Document) -> None:
        tree = trees(document)[3]
        tree["split_conditions"][first_leaf(tree)] = value

    return edit


def set_root(key: str, value: object) -> Callable[[Document], None]:
    def edit(document: Document) -> None:
        trees(document)[2][key][0] = value

    return edit


def test_a_nan_leaf_is_refused_naming_the_tree_and_node() -> None:
    leaf = first_leaf(trees(model_document())[3])

    with pytest.raises(ModelError, match=rf"tree 3, node {leaf}: its leaf value is nan; .* finite"):
        load_model(edited_model(set_leaf(float("nan"))), label="x")


def test_a_nan_leaf_is_refused_in_ubjson_too() -> None:
    # XGBoost itself reads and writes it without a word.
    booster = xgboost.Booster(model_file=bytearray(edited_model(set_leaf(float("nan")))))
    raw = bytes(booster.save_raw("ubj"))

    with pytest.raises(ModelError, match="its leaf value is nan"):
        load_model(raw, label="x")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e39])  # 1e39 overflows float32
def test_a_leaf_past_float32_is_refused(value: float) -> None:
    with pytest.raises(ModelError, match=r"its leaf value is -?(inf|1e\+39)"):
        load_model(edited_model(set_leaf(value)), label="x")


def test_a_nan_split_threshold_is_refused() -> None:
    with pytest.raises(ModelError, match="tree 2, node 0: its split threshold is nan"):
        load_model(edited_model(set_root("split_conditions", float("nan"))), label="x")


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("base_weights", "weight"),
        ("loss_changes", "gain"),
        ("sum_hessian", "cover"),
    ],
)
def test_every_statistic_of_a_node_must_be_finite(key: str, named: str) -> None:
    with pytest.raises(ModelError, match=f"tree 2, node 0: its {named} .* is nan"):
        load_model(edited_model(set_root(key, float("nan"))), label="x")


def test_a_split_without_cover_is_refused() -> None:
    # TreeSHAP divides by it: every explanation through that split would be NaN.
    with pytest.raises(ModelError, match=r"node 0: its cover \(sum_hessian\) is 0; .* above 0"):
        load_model(edited_model(set_root("sum_hessian", 0.0)), label="x")


def test_leaves_that_add_up_past_the_margin_limit_are_refused() -> None:
    with pytest.raises(ModelError, match=r"margin of up to 2e\+06 .* the limit is 1e\+06"):
        load_model(edited_model(set_leaf(2e6)), label="x")


def test_a_tree_value_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ModelError, match=r"'tree 2\.loss_changes' is not a list of numbers"):
        load_model(edited_model(set_root("loss_changes", {"a": 1})), label="x")


# --- the trial --------------------------------------------------------------------------------


def test_the_trial_rows_are_varied_and_within_the_protocols_bounds() -> None:
    rows = trial_rows()

    assert rows.shape == (TRIAL_ROWS, len(FEATURE_NAMES)) and rows.dtype == np.float32
    assert not rows[0].any()
    known = rows[~np.isnan(rows)]
    assert (known >= 0).all() and (known <= rows[1].max()).all()
    assert np.isnan(rows).any(axis=1).sum() == 8
    assert len({tuple(row) for row in rows[2:56].tolist()}) == 54  # no two alike
    hour = FEATURE_NAMES.index("hour_of_day")
    assert np.nanmax(rows[:, hour]) == 23


def use_command(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """The trial runs `python -c script` instead of the real child."""
    monkeypatch.setattr(model_trial, "trial_command", lambda: [sys.executable, "-c", script])


@pytest.mark.slow
def test_a_sound_model_passes_its_trial_once() -> None:
    raw = small_model(seed=11)
    started = time.perf_counter()
    trial_model(raw)
    first = time.perf_counter() - started

    started = time.perf_counter()
    trial_model(raw)  # remembered

    assert time.perf_counter() - started < first / 10


@pytest.mark.slow
def test_a_model_at_the_depth_limit_passes_its_trial() -> None:
    trial_model(deep_model(MAX_DEPTH))


@pytest.mark.slow
def test_what_the_child_refuses_comes_back_in_its_own_words() -> None:
    with pytest.raises(ModelError, match=r"^This is not an XGBoost model: 'the file' has no"):
        trial_model(b'{"hello": "world"}')


@pytest.mark.slow
def test_a_model_that_crashes_its_trial_is_refused_naming_the_signal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_command(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")

    with pytest.raises(ModelError, match=r"crashed with signal 11 \(SIGSEGV\), and would crash"):
        trial_model(small_model())


@pytest.mark.slow
def test_a_trial_that_runs_too_long_is_stopped_and_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_command(monkeypatch, "import sys, time; sys.stdin.buffer.read(); time.sleep(60)")
    started = time.perf_counter()

    with pytest.raises(ModelError, match="took longer than the limit of 1 s"):
        trial_model(small_model(), seconds=1)
    assert time.perf_counter() - started < 10


@pytest.mark.slow
def test_a_trial_that_wants_too_much_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    use_command(monkeypatch, "import sys; sys.stdin.buffer.read(); bytearray(4 * 2**30)")

    with pytest.raises(ModelError, match="more memory than the limit of 512 MiB"):
        trial_model(small_model(), memory_bytes=512 * 2**20)


@pytest.mark.slow
def test_a_trial_that_uses_too_much_cpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    use_command(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGXCPU)")

    with pytest.raises(ModelError, match="more CPU time than the limit of 3 s"):
        trial_model(small_model(), seconds=2.5)


@pytest.mark.slow
def test_the_limits_hold_before_the_child_reads_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    use_command(
        monkeypatch,
        "import resource as r, sys; sys.stdin.buffer.read(); "
        "sys.exit(f'{r.getrlimit(r.RLIMIT_CPU)} {r.getrlimit(r.RLIMIT_AS)}')",
    )

    with pytest.raises(ModelError, match=r"\(5, 6\) \(1073741824, 1073741824\)"):
        trial_model(small_model(), seconds=5, memory_bytes=2**30)
