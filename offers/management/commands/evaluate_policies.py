from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser

from offers.training import DEFAULT_MAX_DEPTH, DEFAULT_ROUNDS, DEFAULT_SESSIONS
from streaming.generator import PAUSE_SECONDS, generate_sessions
from streaming.policy_evaluation import (
    at_risk_shoppers,
    evaluate,
    perfect_targeting,
    qini_svg,
    table,
)
from streaming.training import pause_examples, train_booster
from streaming.uplift_training import qini, randomised_from_generated, train_t_learner

DEFAULT_SHOPPERS = 20_000
DEFAULT_UPLIFT_SESSIONS = 40_000


class Command(BaseCommand):
    help = (
        "Compare offer policies (no offers, offer-all, risk targeting, uplift targeting) on the "
        "same generated shoppers, whose responses to offers are known: incremental buyers, "
        "discount given and net incremental revenue per 1,000 at-risk sessions, and the uplift "
        "model's Qini coefficient on held-out randomised decisions. The models are trained here "
        "on other generated shoppers; progress on stderr."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--shoppers",
            "--sessions",
            dest="shoppers",
            type=_positive,
            default=DEFAULT_SHOPPERS,
            help=f"generated shoppers the policies are played on (default {DEFAULT_SHOPPERS:,})",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of every generation")
        parser.add_argument(
            "--train-sessions",
            type=_positive,
            default=DEFAULT_SESSIONS,
            help=f"generated sessions the risk model learns from (default {DEFAULT_SESSIONS:,})",
        )
        parser.add_argument(
            "--uplift-sessions",
            type=_positive,
            default=DEFAULT_UPLIFT_SESSIONS,
            help="generated shoppers, offered or not at random, the uplift model learns from "
            f"(default {DEFAULT_UPLIFT_SESSIONS:,})",
        )
        parser.add_argument(
            "--discount", type=int, default=10, help="the offer's discount in %% (default 10)"
        )
        parser.add_argument(
            "--min-risk",
            type=float,
            default=0.6,
            help="risk targeting offers from this risk up (default 0.6, the demo's rule)",
        )
        parser.add_argument(
            "--margin", type=float, default=30.0, help="gross margin in %% (default 30)"
        )
        parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
        parser.add_argument(
            "--qini", metavar="PATH", help="also draw the uplift model's Qini curve as SVG"
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        self.stderr.style_func = None
        if not 1 <= options["discount"] <= 90:
            raise CommandError("--discount is a whole percent from 1 to 90")
        if not 0 <= options["margin"] <= 100 or not 0 <= options["min_risk"] <= 1:
            raise CommandError("--margin is 0 to 100, --min-risk 0 to 1")
        seed = options["seed"]
        started = time.perf_counter()

        self.say(f"risk model: {options['train_sessions']:,} generated sessions (seed {seed})")
        X, y = pause_examples(
            generate_sessions(options["train_sessions"], seed=seed), pause_seconds=PAUSE_SECONDS
        )
        risk_model, _ = train_booster(
            X, y, seed=seed, rounds=DEFAULT_ROUNDS, max_depth=DEFAULT_MAX_DEPTH
        )

        self.say(
            f"uplift model: {options['uplift_sessions']:,} generated shoppers offered or not "
            f"at random (seed {seed + 1})"
        )
        randomised = randomised_from_generated(
            generate_sessions(options["uplift_sessions"], seed=seed + 1),
            pause_seconds=PAUSE_SECONDS,
            seed=seed + 1,
        )
        uplift_model = train_t_learner(randomised, seed=seed + 1)

        self.say(
            f"playing the policies on {options['shoppers']:,} other shoppers (seed {seed + 2})"
        )
        sessions = generate_sessions(options["shoppers"], seed=seed + 2)
        shoppers = at_risk_shoppers(sessions, pause_seconds=PAUSE_SECONDS, progress=self.percent)
        if not len(shoppers):
            raise CommandError("no generated shopper paused with a cart: ask for more shoppers")
        results = evaluate(
            shoppers,
            risk=lambda m: np.asarray(risk_model.inplace_predict(m), dtype=np.float64),
            uplift=uplift_model.predict,
            discount_percent=options["discount"],
            min_risk=options["min_risk"],
            margin=options["margin"] / 100,
        )
        # Held out: the same shoppers, offered or not at random at their first pause, which
        # the uplift model never saw.
        held = randomised_from_generated(sessions, pause_seconds=PAUSE_SECONDS, seed=seed + 3)
        p_offer, p_none = uplift_model.predict(held.X)
        curve = qini(held.bought, p_offer - p_none, held.offered)

        perfect = perfect_targeting(
            shoppers, discount_percent=options["discount"], margin=options["margin"] / 100
        )
        self.stdout.write(table([*results, perfect], shoppers=len(shoppers)))
        self.stdout.write(
            "(perfect: offers to the persuadable shoppers only, which only the generator knows: "
            "the most any targeting could earn)"
        )
        self.stdout.write(
            f"Qini coefficient of the uplift model on {len(held):,} held-out randomised "
            f"decisions: {curve.coefficient:.4f}"
        )
        by_policy = {r.policy: r for r in results}
        risk_net = by_policy["risk"].net_incremental_revenue_per_1000
        uplift_net = by_policy["uplift"].net_incremental_revenue_per_1000
        if risk_net > 0:
            self.stdout.write(
                f"uplift targeting against risk targeting, net incremental revenue: "
                f"{uplift_net / risk_net - 1:+.1%} (perfect targeting: "
                f"{perfect.net_incremental_revenue_per_1000 / risk_net - 1:+.1%})"
            )
        if options["json"]:
            document = {
                "policies": [r.as_json() for r in results],
                "qini": round(curve.coefficient, 4),
            }
            Path(options["json"]).write_text(json.dumps(document, indent=2) + "\n")
        if options["qini"]:
            Path(options["qini"]).write_text(qini_svg(curve))
        self.say(f"done in {time.perf_counter() - started:.0f} s")

    def say(self, line: str) -> None:
        self.stderr.write(f"evaluate_policies: {line}")
        self.stderr.flush()

    def percent(self, done: int, total: int) -> None:
        if done == total or done % max(total // 5, 1000) == 0:
            self.say(f"replaying shoppers: {done * 100 // total}% ({done:,}/{total:,})")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value
