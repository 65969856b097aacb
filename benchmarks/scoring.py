"""`bench scoring`: what a decision costs in process, against a bare `Booster.inplace_predict`.

The model is the one `bootstrap_demo` trains (offers.training's defaults: 20,000 generated
sessions, seed 0), trained here in process and loaded through `streaming.scoring.load_model` as
the server loads it (one thread a prediction). The sessions are other generated shoppers,
replayed event by event up to their first pause, so their features are what the worker sees.

Per decision, in batches of 1 and 1,000:
- bare: `booster.inplace_predict(X)` on the precomputed feature matrix, nothing else;
- project: `feature_matrix` + `Scorer.predict_proba` + `policy.decide` on the batch, what
  `Decider.step` does to a batch minus its I/O, also timed part by part;
- decider step: `Decider.step` itself on a `MemoryStore` of due sessions, with no socket to
  deliver to (claim, features, model, policy, offer frame; the reasons are left to the
  background, as in the server);
- with uplift: the project's path when the rules target by uplift (the demo's rules, by uplift):
  features + the risk model + the uplift model (`UpliftScorer.predict`, its two boosters, as
  `train_model --uplift` trains them on as many generated shoppers) + the policy, the uplift
  model also timed alone. Its budget is the same 2x a bare prediction as the project's alone.
And the reasons (`Scorer.reasons`, exact TreeSHAP) per row, in batches of 1 and 100.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from argparse import ArgumentParser
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks import Benchmark, Progress, bounded_float, bounded_int, bounded_ints
from benchmarks.harness import figure, row
from offers.management.commands.bootstrap_demo import DEMO_RULES
from offers.training import DEFAULT_MAX_DEPTH, DEFAULT_ROUNDS, DEFAULT_SESSIONS
from streaming.budget import Budget
from streaming.decider import Decider, ModelSlot, decide_batch, resumed_pauses, score_both
from streaming.delivery import LocalDelivery
from streaming.features import feature_matrix, features_of, session_numbers
from streaming.generator import PAUSE_SECONDS, GeneratedSession, generate_sessions
from streaming.journal import FileJournal
from streaming.policy import Rule, Targeting, Verdicts
from streaming.protocol import Event
from streaming.records import DecisionMade
from streaming.scoring import Scorer, load_model
from streaming.state import (
    SessionState,
)
from streaming.store import MemoryStore
from streaming.training import pause_examples, train_booster
from streaming.uplift_model import UpliftScorer, envelope, load_uplift_model
from streaming.uplift_training import (
    UPLIFT_MAX_DEPTH,
    randomised_from_generated,
    train_t_learner,
)

SITE = "demo"
# Every paused session's deadline; the decisions are made a moment after it.
DEADLINE = 1_764_000_000.0
NOW = DEADLINE + 0.01
# The server's defaults: OFFER_COOLDOWN_SECONDS and HOLDOUT_PERCENT in config/settings.py.
COOLDOWN_SECONDS = 600.0
HOLDOUT_PERCENT = 10.0
EXPLORE_PERCENT = 5.0
MIN_REPEATS = 5
MAX_REPEATS = 10_000
SHOPPERS_SEED = 1  # the model is trained on seed 0: the scored shoppers are others


@dataclass(frozen=True, slots=True)
class Paused:
    """A generated shopper up to its first pause: the events, and the state they leave."""

    events: list[tuple[float, Event]]
    state: SessionState


@dataclass(frozen=True)
class Workload:
    scorer: Scorer
    model: dict[str, Any]  # how it was trained and its held-out figures
    paused: list[Paused]
    rules: list[Rule]
    uplift: UpliftScorer | None = None

    @property
    def states(self) -> list[SessionState]:
        return [p.state for p in self.paused]


# --- the model and the sessions ------------------------------------------------------------------


def train_scorer(*, sessions: int, rounds: int, max_depth: int, seed: int = 0) -> Workload:
    """Train as `bootstrap_demo` does and load as the server does; no sessions yet."""
    X, y = pause_examples(generate_sessions(sessions, seed=seed), pause_seconds=PAUSE_SECONDS)
    booster, metrics = train_booster(X, y, seed=seed, rounds=rounds, max_depth=max_depth)
    scorer = load_model(bytes(booster.save_raw("ubj")), label="bench@1")
    model = {"sessions": sessions, "max_depth": max_depth, **metrics}
    return Workload(scorer, model, [], demo_rules())


def with_uplift(workload: Workload, *, sessions: int, seed: int = 0) -> Workload:
    """The workload with an uplift model trained as `train_model --uplift` trains one on
    generated shoppers, and loaded as the registry watcher loads it."""
    data = randomised_from_generated(
        generate_sessions(sessions, seed=seed), pause_seconds=PAUSE_SECONDS, seed=seed
    )
    model = train_t_learner(data, seed=seed)
    uplift = load_uplift_model(envelope(model.treated, model.control), label="bench-uplift@1")
    trees = model.treated.num_boosted_rounds() + model.control.num_boosted_rounds()
    return replace(workload, uplift=uplift, model={**workload.model, "uplift_trees": trees})


def uplift_rules(rules: Sequence[Rule]) -> list[Rule]:
    """The same rules, targeting by uplift alone."""
    return [replace(rule, targeting=Targeting.UPLIFT, min_risk=0.0) for rule in rules]


def demo_rules() -> list[Rule]:
    """The demo shop's offer rules as the worker holds them, budgets out of the way."""
    return [
        Rule(
            id=number,
            priority=priority,
            min_risk=min_risk,
            min_cart_value=float(min_cart),
            discount_percent=discount,
            title=title,
            message=message,
            daily_budget=1_000_000_000,
            valid_minutes=30,
            site=SITE,
        )
        for number, (priority, min_risk, min_cart, discount, title, message) in enumerate(
            DEMO_RULES, start=1
        )
    ]


def first_pause(session: GeneratedSession) -> tuple[int, float] | None:
    """Events applied before the session's first pause, and its deadline (session from 0 s)."""
    state = SessionState("probe", SITE, started_at=0.0, last_seen=0.0, last_activity=0.0)
    timed = session.timed_events(0.0)
    for applied, (at, event) in enumerate(timed):
        deadline = state.pause_deadline(PAUSE_SECONDS)
        if deadline is not None and deadline <= at:
            return applied, deadline
        state.apply(event, at)
    deadline = state.pause_deadline(PAUSE_SECONDS)
    return None if deadline is None else (len(timed), deadline)


def paused(session: GeneratedSession, number: int) -> Paused | None:
    """The session replayed so that its first pause's deadline is DEADLINE; None if it never pauses."""
    pause = first_pause(session)
    if pause is None:
        return None
    applied, deadline = pause
    start = DEADLINE - deadline
    events = session.timed_events(start)[:applied]
    state = SessionState(
        f"bench-{number}", SITE, started_at=start, last_seen=start, last_activity=start
    )
    for at, event in events:
        state.apply(event, at)
    return Paused(events, state)


def with_shoppers(workload: Workload, count: int) -> Workload:
    """The workload with `count` generated shoppers paused at DEADLINE."""
    found: list[Paused] = []
    for attempt in range(10):  # bounded: about half of all sessions pause with a cart
        sessions = generate_sessions(count * 2, seed=SHOPPERS_SEED + attempt)
        for session in sessions:
            shopper = paused(session, len(found))
            if shopper is not None:
                found.append(shopper)
                if len(found) == count:
                    return replace(workload, paused=found)
    raise RuntimeError(f"found only {len(found)} paused shoppers of {count}")


def prepare(
    *, shoppers: int = 1000, sessions: int = DEFAULT_SESSIONS, rounds: int = DEFAULT_ROUNDS
) -> Workload:
    workload = train_scorer(sessions=sessions, rounds=rounds, max_depth=DEFAULT_MAX_DEPTH)
    return with_shoppers(workload, shoppers)


# --- what is timed ---------------------------------------------------------------------------


def policy(
    states: Sequence[SessionState],
    numbers: npt.NDArray[np.float64],
    risks: npt.NDArray[np.float64],
    rules: Sequence[Rule],
) -> Verdicts:
    """The policy on a batch, as `Decider.step` calls it."""
    return decide_batch(
        states,
        numbers,
        risks,
        rules=rules,
        used_today={},
        now=NOW,
        cooldown_seconds=COOLDOWN_SECONDS,
        holdout_percent=HOLDOUT_PERCENT,
        resumed=resumed_pauses(numbers, PAUSE_SECONDS),
    )


def project(states: Sequence[SessionState], scorer: Scorer, rules: Sequence[Rule]) -> Verdicts:
    # (n, NUMBERS) float64 → (n, F) float32 features → (n,) risks → one verdict a session
    numbers = session_numbers(states)
    risks = scorer.predict_proba(features_of(numbers, NOW))
    return policy(states, numbers, risks, rules)


def project_with_uplift(
    states: Sequence[SessionState], scorer: Scorer, uplift: UpliftScorer, rules: Sequence[Rule]
) -> Verdicts:
    # (n, F) features → (n,) risks and (n,) chances with and without an offer, as
    # `Decider.step` scores them (`score_both`) → one verdict a session
    numbers = session_numbers(states)
    risks, chances = score_both(scorer, uplift, features_of(numbers, NOW))
    assert risks is not None
    return decide_batch(
        states,
        numbers,
        risks,
        rules=rules,
        used_today={},
        now=NOW,
        cooldown_seconds=COOLDOWN_SECONDS,
        holdout_percent=HOLDOUT_PERCENT,
        resumed=resumed_pauses(numbers, PAUSE_SECONDS),
        chances=chances,
        margins={SITE: 0.30},
        explore_percent=EXPLORE_PERCENT,
    )


def median_seconds(call: Callable[[], object], *, seconds: float) -> float:
    """Median seconds per call, over repeats that together last at least `seconds`."""
    return interleaved_medians({"call": call}, seconds=seconds)["call"]


def interleaved_medians(
    calls: Mapping[str, Callable[[], object]], *, seconds: float
) -> dict[str, float]:
    """Median seconds per call of each, over repeats taken in turn until each has had `seconds`.

    Taking the repeats in turn rather than one callable after another makes the figures
    comparable: whatever else the machine does slows all of them alike, not one.
    """
    rounds = {name: _calls_per_repeat(call, seconds / 20) for name, call in calls.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    began = time.perf_counter()
    while len(samples[next(iter(calls))]) < MIN_REPEATS or (
        time.perf_counter() - began < seconds * len(calls)
        and len(samples[next(iter(calls))]) < MAX_REPEATS
    ):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(rounds[name]):
                call()
            samples[name].append((time.perf_counter() - start) / rounds[name])
    return {name: statistics.median(taken) for name, taken in samples.items()}


def _calls_per_repeat(call: Callable[[], object], target: float) -> int:
    calls = 1
    while calls < 1 << 20:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        if time.perf_counter() - start >= target:
            break
        calls *= 2
    return calls


def _cycle(items: Sequence[Any]) -> Callable[[], Any]:
    """Each call the next item, round and round: a batch of 1 is not always the same row."""
    return itertools.cycle(items).__next__


@dataclass(frozen=True, slots=True)
class BatchFigures:
    batch: int
    bare_us: float  # all per decision (row)
    features_us: float
    model_us: float
    policy_us: float
    project_us: float
    decider_us: float
    outcomes: dict[str, int]  # of the decider steps' decisions
    uplift_us: float = math.nan  # the uplift model alone
    with_uplift_us: float = math.nan  # features + both models + the policy by uplift

    @property
    def ratio(self) -> float:
        return self.project_us / self.bare_us

    @property
    def with_uplift_ratio(self) -> float:
        return self.with_uplift_us / self.bare_us

    @property
    def decider_ratio(self) -> float:
        return self.decider_us / self.bare_us


def measure_batch(workload: Workload, batch: int, *, seconds: float) -> BatchFigures:
    """Per-decision cost of each part, in batches of `batch` rows of the workload's shoppers."""
    states, scorer, rules = workload.states, workload.scorer, workload.rules
    if not 1 <= batch <= len(states):
        raise ValueError(f"a batch of {batch} from {len(states)} shoppers")
    groups = [states[i : i + batch] for i in range(0, len(states) - batch + 1, batch)]
    numbers = [session_numbers(group) for group in groups]
    matrices = [features_of(group_numbers, NOW) for group_numbers in numbers]
    risks = [scorer.predict_proba(matrix) for matrix in matrices]
    triples = list(zip(groups, numbers, risks, strict=True))
    booster = scorer.booster

    next_matrix, next_group, next_triple = _cycle(matrices), _cycle(groups), _cycle(triples)

    def decide_next() -> Verdicts:
        group, group_numbers, group_risks = next_triple()
        return policy(group, group_numbers, group_risks, rules)

    calls: dict[str, Callable[[], object]] = {
        "bare": lambda: booster.inplace_predict(next_matrix()),
        "features": lambda: feature_matrix(next_group(), NOW),
        "model": lambda: scorer.predict_proba(next_matrix()),
        "policy": decide_next,
        "project": lambda: project(next_group(), scorer, rules),
    }
    uplift = workload.uplift
    if uplift is not None:
        by_uplift = uplift_rules(rules)
        calls["uplift"] = lambda: uplift.predict(next_matrix())
        calls["with uplift"] = lambda: project_with_uplift(next_group(), scorer, uplift, by_uplift)
    seconds_each = interleaved_medians(calls, seconds=seconds)
    per_row = {name: value / batch * 1e6 for name, value in seconds_each.items()}
    decider_us, outcomes = asyncio.run(decider_steps(workload, batch, seconds=seconds))
    return BatchFigures(
        batch,
        per_row["bare"],
        per_row["features"],
        per_row["model"],
        per_row["policy"],
        per_row["project"],
        decider_us,
        outcomes,
        per_row.get("uplift", math.nan),
        per_row.get("with uplift", math.nan),
    )


async def decider_steps(
    workload: Workload, batch: int, *, seconds: float
) -> tuple[float, dict[str, int]]:
    """Median µs per decision of `Decider.step` claiming `batch` due sessions at a time.

    Each fill of a store is the workload's shoppers, replayed through `MemoryStore.apply`; the
    reasons and records each step leaves in the background are awaited between steps, untimed.
    """
    outcomes: Counter[str] = Counter()

    async def record(decisions: list[DecisionMade]) -> None:
        outcomes.update(d.outcome for d in decisions)

    samples: list[float] = []
    began = time.perf_counter()
    for _ in range(MAX_REPEATS):
        store = await replayed_store(workload.paused)
        decider = Decider(
            store=store,
            delivery=LocalDelivery(),  # no socket open: deliver finds nobody to send to
            models=ModelSlot(active=workload.scorer),
            rules=lambda: workload.rules,
            budget=Budget(),
            journal=FileJournal(),  # in memory: the records are not what is measured
            record=record,
            pause_seconds=PAUSE_SECONDS,
            cooldown_seconds=COOLDOWN_SECONDS,
            holdout_percent=HOLDOUT_PERCENT,
            batch_size=batch,
        )
        for _ in range(len(workload.paused) // batch):
            start = time.perf_counter()
            found = await decider.step(NOW)
            samples.append((time.perf_counter() - start) / batch)
            await decider.drain()
            if not found:
                raise RuntimeError("Decider.step found no due session")
        if len(samples) >= MIN_REPEATS and time.perf_counter() - began >= seconds:
            break
    return statistics.median(samples) * 1e6, dict(outcomes)


async def replayed_store(shoppers: Sequence[Paused]) -> MemoryStore:
    store = MemoryStore(pause_seconds=PAUSE_SECONDS)
    for shopper in shoppers:
        session_id = shopper.state.session_id
        for at, event in shopper.events:
            await store.apply(session_id=session_id, site=SITE, events=[event], now=at)
    return store


def measure_reasons(workload: Workload, batch: int, *, seconds: float) -> float:
    """µs per row of `Scorer.reasons` (exact TreeSHAP, top 3) in batches of `batch` rows."""
    states, scorer = workload.states, workload.scorer
    matrices = [
        feature_matrix(states[i : i + batch], NOW) for i in range(0, len(states) - batch + 1, batch)
    ]
    next_matrix = _cycle(matrices)
    return median_seconds(lambda: scorer.reasons(next_matrix()), seconds=seconds) / batch * 1e6


# --- the report ------------------------------------------------------------------------------


@dataclass
class ScoringReport:
    seconds: float
    model: dict[str, Any]
    shoppers: int
    batches: list[BatchFigures] = field(default_factory=list)
    reasons_us: dict[int, float] = field(default_factory=dict)  # batch -> µs per row

    def table(self) -> str:
        model = self.model
        rows = [
            f"scoring (µs per decision, median of repeats over ≥ {self.seconds:g} s each; model: "
            f"{model['rounds']} trees of depth ≤ {model['max_depth']} from {model['sessions']:,} "
            f"generated sessions, 1 thread; {self.shoppers:,} other shoppers at their first pause)",
            _row(
                "batch",
                "bare predict",
                "features",
                "model",
                "policy",
                "project",
                "project/bare",
                "decider step",
                "step/bare",
            ),
        ]
        for figures in self.batches:
            rows.append(
                _row(
                    f"{figures.batch:,}",
                    *(
                        _us(value)
                        for value in (
                            figures.bare_us,
                            figures.features_us,
                            figures.model_us,
                            figures.policy_us,
                            figures.project_us,
                        )
                    ),
                    f"{figures.ratio:.2f}x",
                    _us(figures.decider_us),
                    f"{figures.decider_ratio:.2f}x",
                )
            )
        reasons = ", ".join(
            f"batch of {batch:,}: {_us(us)} µs/row" for batch, us in self.reasons_us.items()
        )
        rows.append(f"reasons (Scorer.reasons, exact TreeSHAP, top 3): {reasons}")
        if "uplift_trees" in model:
            rows.append(
                f"with uplift (the demo's rules by uplift; uplift model: {model['uplift_trees']} "
                f"trees of depth ≤ {UPLIFT_MAX_DEPTH} in two boosters, 1 thread)"
            )
            rows.append(_row("batch", "bare predict", "uplift model", "project", "project/bare"))
            for figures in self.batches:
                rows.append(
                    _row(
                        f"{figures.batch:,}",
                        _us(figures.bare_us),
                        _us(figures.uplift_us),
                        _us(figures.with_uplift_us),
                        f"{figures.with_uplift_ratio:.2f}x",
                    )
                )
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "model": self.model,
            "shoppers": self.shoppers,
            "batches": [
                asdict(f)
                | {
                    "project/bare": f.ratio,
                    "step/bare": f.decider_ratio,
                    "with_uplift/bare": f.with_uplift_ratio,
                }
                for f in self.batches
            ],
            "reasons_us_per_row": {str(batch): us for batch, us in self.reasons_us.items()},
        }


def _row(first: str, *cells: str) -> str:
    return row(first, *cells, widths=(7, 14))


def _us(value: float) -> str:
    return figure(value, decimals=2)


def run(options: Mapping[str, Any], progress: Progress) -> ScoringReport:
    batches, reason_batches = options["batches"], options["reason_batches"]
    shoppers = max(1000, *batches, *reason_batches)
    progress(f"training the default model on {options['train_sessions']:,} generated sessions")
    workload = train_scorer(
        sessions=options["train_sessions"], rounds=DEFAULT_ROUNDS, max_depth=DEFAULT_MAX_DEPTH
    )
    progress(f"model: {workload.model['rounds']} trees, held-out AUC {workload.model['auc']}")
    progress(f"training the uplift model on {options['train_sessions']:,} generated shoppers")
    workload = with_uplift(workload, sessions=options["train_sessions"])
    progress(f"replaying {shoppers:,} generated shoppers to their first pause")
    workload = with_shoppers(workload, shoppers)
    report = ScoringReport(float(options["seconds"]), workload.model, shoppers)
    for batch in batches:
        figures = measure_batch(workload, batch, seconds=report.seconds)
        progress(
            f"batch of {batch:,}: bare {_us(figures.bare_us)} µs, project "
            f"{_us(figures.project_us)} µs, with uplift {_us(figures.with_uplift_us)} µs, "
            f"decider step {_us(figures.decider_us)} µs a decision"
        )
        report.batches.append(figures)
    for batch in reason_batches:
        report.reasons_us[batch] = measure_reasons(workload, batch, seconds=report.seconds)
        progress(f"reasons, batch of {batch:,}: {_us(report.reasons_us[batch])} µs a row")
    return report


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--batches",
        type=bounded_ints(1, 10_000),
        default=[1, 1000],
        help="decisions a batch (1,1000)",
    )
    parser.add_argument(
        "--reason-batches",
        type=bounded_ints(1, 10_000),
        default=[1, 100],
        help="rows a reasons batch (1,100)",
    )
    parser.add_argument(
        "--seconds",
        type=bounded_float(0, 60, above_low=True),
        default=1.0,
        help="least measured seconds per figure (1)",
    )
    parser.add_argument(
        "--train-sessions",
        type=bounded_int(100, 1_000_000),
        default=DEFAULT_SESSIONS,
        help=f"generated sessions the model is trained on ({DEFAULT_SESSIONS:,}, as bootstrap_demo)",
    )


BENCHMARK = Benchmark(
    help="features + model + policy per decision against a bare Booster.inplace_predict",
    add_arguments=add_arguments,
    run=run,
)
