from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from offers.models import ScoringModel
from offers.training import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MIN_RECORDED,
    DEFAULT_ROUNDS,
    DEFAULT_SESSIONS,
    ClickstreamSource,
    GateRefused,
    train_model,
)
from streaming.model_file import MAX_DEPTH, MAX_TREES

# The exit status when the gate keeps the new model from being activated.
GATE_REFUSED = 3


class Command(BaseCommand):
    help = (
        "Train a cart-risk model on recorded decisions (when there are enough) or on generated "
        "shoppers, and store it as a new version; progress on stderr. Exits 3 when --activate "
        "keeps it a candidate because it does worse than the active model."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--uplift",
            action="store_true",
            help="train the uplift model instead (chances to buy with an offer and without) on "
            "recorded randomised decisions (offers and holdouts of known outcome), or on "
            "generated shoppers when there are fewer than --min-recorded; --activate activates "
            "it when its held-out Qini coefficient is above 0 (else exit 3), --force regardless",
        )
        parser.add_argument(
            "--activate",
            action="store_true",
            help="score with it from now on if it passes the gate: on the same held-out "
            "decisions, its ROC-AUC at least the active model's minus 0.005 and its log-loss at "
            "most 2%% worse; otherwise it stays a candidate and the command exits with status 3",
        )
        parser.add_argument(
            "--force", action="store_true", help="activate it whatever the gate says"
        )
        parser.add_argument(
            "--shadow",
            action="store_true",
            help="run it in shadow (scored and recorded beside the active model, never acted "
            "on); `manage.py promote_shadow` promotes it once it has proved itself",
        )
        parser.add_argument(
            "--sessions",
            type=_positive,
            default=DEFAULT_SESSIONS,
            help=f"generated sessions to train on (default {DEFAULT_SESSIONS})",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed for generation and split")
        parser.add_argument(
            "--min-recorded",
            type=int,
            default=DEFAULT_MIN_RECORDED,
            help="train on recorded decisions when at least this many have a known outcome "
            f"(default {DEFAULT_MIN_RECORDED})",
        )
        parser.add_argument("--rounds", type=_at_most(MAX_TREES), default=DEFAULT_ROUNDS)
        parser.add_argument(
            "--max-depth",
            type=_at_most(MAX_DEPTH),
            default=DEFAULT_MAX_DEPTH,
            help=f"at most {MAX_DEPTH}: deeper models are refused when uploaded or activated",
        )
        parser.add_argument(
            "--clickstream",
            help="train on the real pauses of a clickstream: 'log' (the event log) or a file "
            "(see --clickstream-format); the most recent 20%% held out",
        )
        parser.add_argument(
            "--clickstream-format",
            choices=["events", "rees46", "otto"],
            default="events",
            help="the clickstream file's format (default events: session,time,event,product,price)",
        )
        parser.add_argument("--since", help="clickstream sessions from (ISO 8601 or Unix seconds)")
        parser.add_argument(
            "--until", help="clickstream sessions before (ISO 8601 or Unix seconds)"
        )
        parser.add_argument(
            "--users",
            choices=["even", "odd"],
            help="only shoppers with an even (or odd) user id (REES46): train on one half, "
            "evaluate on the other",
        )
        parser.add_argument(
            "--format",
            choices=ScoringModel.Format.values,
            default=ScoringModel.Format.UBJSON,
            help="how the booster is stored (default ubj)",
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        # Progress lines are not errors: plain text, whatever the terminal.
        self.stderr.style_func = None

        def progress(line: str) -> None:
            self.stderr.write(f"train_model: {line}")
            self.stderr.flush()

        if options["shadow"] and (options["activate"] or options["force"]):
            raise CommandError("--shadow or --activate, not both")
        if options["uplift"]:
            self.train_uplift(options)
            return
        clickstream = None
        if options["clickstream"]:
            from streaming.clickstream import parse_time

            try:
                clickstream = ClickstreamSource(
                    options["clickstream"],
                    "log" if options["clickstream"] == "log" else options["clickstream_format"],
                    since=parse_time(options["since"]) if options["since"] else None,
                    until=parse_time(options["until"]) if options["until"] else None,
                    users=options["users"],
                )
            except ValueError as exc:
                raise CommandError(f"--since/--until: {exc}") from exc
        try:
            train_model(
                clickstream=clickstream,
                sessions=options["sessions"],
                seed=options["seed"],
                min_recorded=options["min_recorded"],
                rounds=options["rounds"],
                max_depth=options["max_depth"],
                artifact_format=options["format"],
                activate=options["activate"],
                force=options["force"],
                shadow=options["shadow"],
                say=self.stdout.write,
                progress=progress,
            )
        except GateRefused as exc:
            raise CommandError(str(exc), returncode=GATE_REFUSED) from exc
        except (OSError, ValueError) as exc:  # a ModelError too: the model failed its trial
            raise CommandError(str(exc)) from exc

    def train_uplift(self, options: dict[str, Any]) -> None:
        from offers.uplift_training import train_uplift_model

        if options["shadow"] or options["clickstream"]:
            raise CommandError(
                "--uplift trains on randomised decisions: no --shadow, no --clickstream"
            )
        try:
            train_uplift_model(
                sessions=options["sessions"],
                seed=options["seed"],
                min_recorded=options["min_recorded"],
                activate=options["activate"],
                force=options["force"],
                say=self.stdout.write,
            )
        except GateRefused as exc:
            raise CommandError(str(exc), returncode=GATE_REFUSED) from exc
        except ValueError as exc:  # a ModelError too: a booster failed its trial
            raise CommandError(str(exc)) from exc


def _at_most(limit: int) -> Callable[[str], int]:
    def bounded(text: str) -> int:
        value = _positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"at most {limit} (a model's limit)")
        return value

    return bounded


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value
