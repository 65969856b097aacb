"""`bench realdata`: models judged on real shoppers, the REES46 Open CDP sample.

The sample's sessions are split by shopper: those of an even `user_id` train, those of an odd
one judge. Two models are measured on the real pauses of the odd half (a gap of PAUSE_SECONDS,
30 s by default, or more after activity with a full cart, or the session's end with one; label:
the shopper did not buy later in the session):

- the default model, trained as `bootstrap_demo` trains it, on generated shoppers;
- a model trained on the real pauses of the even half (`train_model --clickstream ... --users
  even`), with the same training code and a time split.

Each with ROC-AUC and PR-AUC and their bootstrap 95% intervals (1,000 resamples of pauses).

With `--live`, the default model is measured once more through a live server: `serve` with the
database `bootstrap_demo` prepares (the same default model), the odd half's carted sessions
replayed through the collector at their recorded pace, all at once (`benchmarks/clients/
replay.py`: about 26 minutes for the sample), the pauses found by the server's detector and
scored by its worker, each decision labelled by what the shopper did after it. Beside it, how
well the live decisions agree with the same replay on a simulated clock set to the same moments:
the same pauses, and the risk of each within 0.01.

The sample's licence is not verified: it is read from where it lies, never shipped; without
it the benchmark says so and measures nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import tempfile
from argparse import ArgumentParser
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from benchmarks import BenchError, Benchmark, Progress, bounded_int
from benchmarks.clients.replay import Replayed, replay_live
from benchmarks.harness import HOST, Server, bench_env, prepare_database, running_server
from offers.backtest import with_interval
from offers.models import Decision
from offers.training import TEST_FRACTION, user_half
from streaming.clickstream import ClickSession, read_rees46, replay
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
SERVER = Server("project", "project", ("manage.py", "serve"))
SITE = "demo"  # the site bootstrap_demo creates
RISK_AGREES = 0.01  # a live risk this close to the simulated replay's is the same decision


@dataclass
class RealDataReport:
    path: str
    pause_seconds: float
    sessions: dict[str, int] = field(default_factory=dict)
    pauses: dict[str, int] = field(default_factory=dict)
    abandoned: dict[str, int] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    live: dict[str, Any] = field(default_factory=dict)
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
        if self.live:
            live = self.live
            lines += [
                "",
                f"through the live server: {live['sessions']} carted sessions replayed at their "
                f"recorded pace, {live['events_acked']:,}/{live['events_sent']:,} events "
                f"acknowledged, {live['pauses']} pauses decided ({live['abandoned']} abandoned)",
                f"  against the replay on a simulated clock at the same moments: "
                f"{live['paired']}/{live['simulated']} of its pauses found live, "
                f"{live['risk_agrees']} with the risk within {RISK_AGREES:g} "
                f"(largest difference {live['largest_difference']:.4f})",
            ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "pause_seconds": self.pause_seconds,
            "sessions": self.sessions,
            "pauses": self.pauses,
            "abandoned": self.abandoned,
            "models": self.models,
            "live": self.live,
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
    if options["live"]:
        measure_live(report, halves["odd"], default, pause_seconds=pause, progress=progress)
    return report


def measure_live(
    report: RealDataReport,
    sessions: Sequence[ClickSession],
    model: xgb.Booster,
    *,
    pause_seconds: float,
    progress: Progress,
) -> None:
    """The default model through a live server, on the real pauses of `sessions`."""
    carted = [s for s in sessions if any(e.name == "add_to_cart" for _, e in s.events)]
    with tempfile.TemporaryDirectory(prefix="liveoffers-bench-") as tmp:
        workdir = Path(tmp)
        env = bench_env(workdir) | {"PAUSE_SECONDS": f"{pause_seconds:g}"}
        progress("preparing the server's database (migrate, bootstrap_demo trains the model)")
        prepare_database(env)
        with running_server(SERVER, env=env, core=None, log=workdir / "serve.log") as (_, port):
            replayed = asyncio.run(
                replay_live(
                    carted,
                    f"http://{HOST}:{port}",
                    site=SITE,
                    pause_seconds=pause_seconds,
                    progress=progress,
                )
            )
        decided = recorded_decisions(workdir / "bench.sqlite3")
    by_server = {r.server_session: r for r in replayed}
    live_rows = []  # (replayed session, recorded time of the decision, risk)
    for decision in decided:
        replayed_session = by_server.get(decision.session)
        if replayed_session is not None and decision.risk is not None:
            moment = replayed_session.recorded_time(decision.at)
            live_rows.append((replayed_session, moment, decision.risk))
    truth = np.array(
        [0.0 if bought_after(r.session, at) else 1.0 for r, at, _ in live_rows], dtype=np.float64
    )
    risks = np.array([risk for _, _, risk in live_rows], dtype=np.float64)
    report.models.append(
        {
            "model": f"default, through the live server ({len(live_rows)})",
            "roc_auc": with_interval(auc, truth, risks),
            "pr_auc": with_interval(average_precision, truth, risks),
        }
    )
    report.live = {
        "sessions": len(carted),
        "events_sent": sum(r.sent for r in replayed),
        "events_acked": sum(r.acked for r in replayed),
        "refused": sorted({why for r in replayed for why in r.refused})[:5],
        "pauses": len(live_rows),
        "abandoned": int(truth.sum()),
        **agreement(replayed, live_rows, model, pause_seconds=pause_seconds),
    }


@dataclass(frozen=True, slots=True)
class Recorded:
    """A decision as the server recorded it."""

    session: str
    at: float  # unix seconds
    risk: float | None
    features: dict[str, float]


def recorded_decisions(database: Path) -> list[Recorded]:
    """Every decision in the server's SQLite database, oldest first."""
    table = Decision._meta.db_table
    with contextlib.closing(sqlite3.connect(database)) as db:
        rows = db.execute(f"SELECT session, at, risk, features FROM {table} ORDER BY at").fetchall()
    return [
        Recorded(
            session,
            datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp(),
            risk,
            json.loads(features),
        )
        for session, at, risk, features in rows
    ]


def bought_after(session: ClickSession, at: float) -> bool:
    return any(event.name == "purchase" and when > at for when, event in session.events)


def agreement(
    replayed: Sequence[Replayed],
    live_rows: Sequence[tuple[Replayed, float, float]],
    model: xgb.Booster,
    *,
    pause_seconds: float,
) -> dict[str, Any]:
    """The live decisions beside the simulated replay of the same sessions at the same moments."""
    moved = [r.as_sent() for r in replayed]
    simulated = replay(moved, pause_seconds=pause_seconds, outcome_window=LATER_IN_THE_SESSION)
    expected = model.inplace_predict(simulated.X).astype(np.float64)
    live_by_session: dict[str, list[float]] = {}
    for r, _, risk in live_rows:
        live_by_session.setdefault(r.session.session_id, []).append(risk)
    differences = []
    seen: dict[str, int] = {}
    for pause, risk in zip(simulated.pauses, expected, strict=True):
        nth = seen[pause.session_id] = seen.get(pause.session_id, -1) + 1
        live = live_by_session.get(pause.session_id, [])
        if nth < len(live):
            differences.append(abs(live[nth] - float(risk)))
    return {
        "simulated": len(simulated),
        "paired": len(differences),
        "risk_agrees": sum(d <= RISK_AGREES for d in differences),
        "largest_difference": max(differences, default=0.0),
    }


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
    parser.add_argument(
        "--live",
        action="store_true",
        help="also replay the odd half's carted sessions through a live server at their "
        "recorded pace (about 26 minutes for the sample) and measure the decisions it records",
    )


BENCHMARK = Benchmark(
    help="models on real shoppers: the default and a clickstream-trained model on the odd half "
    "of the REES46 sample (path as an argument), ROC-AUC and PR-AUC with bootstrap intervals",
    add_arguments=add_arguments,
    run=run,
)
