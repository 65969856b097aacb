from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from offers import services
from offers.evaluation import figures_table, shadow_trial
from streaming.evaluation import gate
from streaming.model_file import ModelError

DEFAULT_MIN_OUTCOMES = 500
# The exit status when the shadow model stays in shadow (as train_model's gate).
NOT_PROMOTED = 3


class Command(BaseCommand):
    help = (
        "Promote the shadow model to active when, on at least --min-outcomes known outcomes "
        "decided since it entered shadow, it does as well as the active one by the gate's rule "
        "(ROC-AUC at least the active one's minus 0.005, log-loss at most 2% worse); otherwise "
        "say why and exit 3."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--min-outcomes",
            type=int,
            default=DEFAULT_MIN_OUTCOMES,
            help=f"known outcomes needed to judge (default {DEFAULT_MIN_OUTCOMES})",
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        try:
            trial = shadow_trial()
        except ModelError as exc:
            raise CommandError(f"not promoted: a model could not be loaded: {exc}") from exc
        if trial is None:
            raise CommandError("no model is in shadow", returncode=NOT_PROMOTED)
        shadow, active = trial.shadow, trial.active
        since = f"since it entered shadow at {trial.since:%Y-%m-%d %H:%M} UTC"
        if active is None:
            services.model_promote(model=shadow, note="no model was active")
            self.stdout.write(f"{shadow.label} promoted: no model was active")
            return
        needed = options["min_outcomes"]
        if trial.n < needed:
            raise CommandError(
                f"{shadow.label} stays in shadow: {trial.n} known outcomes {since}, "
                f"{needed} needed to judge it",
                returncode=NOT_PROMOTED,
            )
        new, current = (evaluation.figures for evaluation in trial.comparison.models)
        self.stdout.write(f"{trial.n} known outcomes {since}:")
        table = figures_table(
            [(f"{shadow.label} (shadow)", new), (f"{active.label} (active)", current)]
        )
        self.stdout.write("\n".join(f"  {line}" for line in table.splitlines()))
        verdict = gate(new, current)
        why = "; ".join(verdict.reasons)
        if not verdict.passed:
            raise CommandError(
                f"{shadow.label} stays in shadow: against {active.label}, {why}",
                returncode=NOT_PROMOTED,
            )
        services.model_promote(
            model=shadow,
            note=f"on {trial.n} known outcomes {since}: {why} "
            f"({shadow.label}: ROC-AUC {new.roc_auc:.4f}, log-loss {new.log_loss:.4f}; "
            f"{active.label}: ROC-AUC {current.roc_auc:.4f}, log-loss {current.log_loss:.4f})",
        )
        self.stdout.write(f"{shadow.label} promoted: it replaces {active.label} ({why})")
