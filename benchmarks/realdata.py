"""`bench realdata`: models judged on real shoppers, the REES46 Open CDP sample.

The sample's sessions are split by shopper: those of an even `user_id` train, those of an odd
one judge. Two models are measured on the real pauses of the odd half (a gap of PAUSE_SECONDS,
30 s by default, or more after activity with a full cart, or the session's end with one; label:
the shopper did not buy later in the session):

- the default model, trained as `bootstrap_demo` trains it, on generated shoppers;
- a model trained on the real pauses of the even half (`train_model --clickstream ... --users
  even`), with the same training code and a time split.

Each with ROC-AUC and PR-AUC and their bootstrap 95% intervals (1,000 resamples of pauses).
The sample's licence is not verified: it is read from where it lies, never shipped; without
it the benchmark says so and measures nothing.
"""

from __future__ import annotations

from argparse import ArgumentParser
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import BenchError, Benchmark, Progress, bounded_int
from offers.backtest import with_interval
from offers.training import TEST_FRACTION, user_half
from streaming.clickstream import read_rees46, replay
from streaming.generator import generate_sessions
from streaming.training import (
    auc,
    average_precision,
    pause_examples,
    stratified_split,
    time_split,
    train_booster,
)

LATER_IN_THE_SESSION = 1e9  # seconds: "bought later in the session", however much later


@dataclass
class RealDataReport:
    path: str
    pause_seconds: float
    sessions: dict[str, int] = field(default_factory=dict)
    pauses: dict[str, int] = field(default_factory=dict)
    abandoned: dict[str, int] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    skipped: str = ""

    def table(self) -> str:
        if self.skipped:
            return f"bench realdata: skipped: {self.skipped}"
        lines = [
            f"REES46 sample {self.path}: pauses of {self.pause_seconds:g} s",
            f"  even user_id (train): {self.sessions['even']:,} sessions, "
            f"{self.pauses['even']} pauses ({self.abandoned['even']} abandoned)",
            f"  odd user_id (judge):  {self.sessions['odd']:,} sessions, "
            f"{self.pauses['odd']} pauses ({self.abandoned['odd']} abandoned)",
            "",
            f"{'model':<44}{'ROC-AUC (95% CI)':<26}PR-AUC (95% CI)",
        ]
        for model in self.models:
            lines.append(f"{model['model']:<44}{_ci(model['roc_auc']):<26}{_ci(model['pr_auc'])}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "pause_seconds": self.pause_seconds,
            "sessions": self.sessions,
            "pauses": self.pauses,
            "abandoned": self.abandoned,
            "models": self.models,
            "skipped": self.skipped,
        }


def _ci(figure: dict[str, float | None]) -> str:
    if figure["estimate"] is None:
        return "-"
    return f"{figure['estimate']:.3f} ({figure['low']:.3f}-{figure['high']:.3f})"


def run(options: Mapping[str, Any], progress: Progress) -> RealDataReport:
    path = Path(options["rees46"] or "")
    pause = float(options["pause_seconds"])
    report = RealDataReport(str(path), pause)
    if not options["rees46"] or not path.is_file():
        report.skipped = (
            f"no REES46 sample at {options['rees46'] or '(none given)'} (give its path: bench "
            "realdata --rees46 PATH; the "
            "sample is not shipped, its licence being unverified)"
        )
        progress(report.skipped)
        return report
    progress(f"reading {path}")
    read = read_rees46(path)
    halves: dict[str, list[Any]] = {"even": [], "odd": []}
    for session in read.sessions:
        half = user_half(session.user)
        if half is not None:
            halves[half].append(session)
    replayed = {}
    for half, sessions in halves.items():
        replayed[half] = replay(sessions, pause_seconds=pause, outcome_window=LATER_IN_THE_SESSION)
        report.sessions[half] = len(sessions)
        report.pauses[half] = len(replayed[half])
        report.abandoned[half] = int(replayed[half].y.sum())
    judge = replayed["odd"]
    if len(judge) < 2 or judge.y.min() == judge.y.max():
        raise BenchError("the odd half has no pauses of both outcomes to judge on")
    truth = judge.y.astype(np.float64)

    progress(f"training the default model on {options['sessions']:,} generated shoppers")
    X, y = pause_examples(generate_sessions(options["sessions"], seed=0), pause_seconds=pause)
    default, _ = train_booster(
        X, y, seed=0, split=stratified_split(y, test_fraction=TEST_FRACTION, seed=0)
    )
    progress("training on the even half's real pauses (a time split)")
    train = replayed["even"]
    order = np.argsort([p.at for p in train.pauses], kind="stable")
    real, _ = train_booster(
        train.X[order],
        train.y[order],
        seed=0,
        split=time_split(len(train), test_fraction=TEST_FRACTION),
    )
    for label, booster in (
        ("default (generated shoppers)", default),
        (f"clickstream (even half, {len(train)} pauses)", real),
    ):
        scores = booster.inplace_predict(judge.X).astype(np.float64)
        report.models.append(
            {
                "model": label,
                "roc_auc": with_interval(auc, truth, scores),
                "pr_auc": with_interval(average_precision, truth, scores),
            }
        )
    return report


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--rees46",
        default=None,
        help="the REES46 sample (CSV), which is not shipped; without it the benchmark says so",
    )
    parser.add_argument("--pause-seconds", type=float, default=30.0)
    parser.add_argument(
        "--sessions",
        type=bounded_int(100, 1_000_000),
        default=20_000,
        help="generated shoppers the default model learns from (as bootstrap_demo: 20,000)",
    )


BENCHMARK = Benchmark(
    help="models on real shoppers: the default and a clickstream-trained model on the odd half "
    "of the REES46 sample (path as an argument), ROC-AUC and PR-AUC with bootstrap intervals",
    add_arguments=add_arguments,
    run=run,
)
