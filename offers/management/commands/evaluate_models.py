from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from offers.evaluation import compare_models, default_models, figures_table, models_by_label
from streaming.model_file import ModelError


class Command(BaseCommand):
    help = (
        "Re-score the decisions whose outcome is known (no offer or holdout, decided at least "
        "OUTCOME_WINDOW_SECONDS ago) with each model and print, per model: decisions, buyers, "
        "ROC-AUC, PR-AUC, log-loss, Brier score and expected calibration error. Every model is "
        "measured on the same decisions; progress on stderr."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "labels",
            nargs="*",
            metavar="MODEL",
            help="models as name@version (cart-risk@3) or a version alone; "
            "default: the active, the shadow and the latest candidate",
        )
        parser.add_argument(
            "--json",
            metavar="PATH",
            help='also write {"models": [{"model", "n", "buyers", "roc_auc", ...}]} there '
            "(- for stdout, instead of the table)",
        )
        parser.add_argument(
            "--since",
            type=_moment,
            metavar="ISO",
            help="only decisions made at or after this time (2025-06-01 or "
            "2025-06-01T12:00:00+02:00; UTC when no offset is given)",
        )

        parser.add_argument(
            "--clickstream",
            help="score the models on the real pauses of a clickstream instead: 'log' (the "
            "event log) or a file in --clickstream-format",
        )
        parser.add_argument(
            "--clickstream-format", choices=["events", "rees46", "otto"], default="events"
        )
        parser.add_argument(
            "--users", choices=["even", "odd"], help="only shoppers with an even (or odd) user id"
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        self.stderr.style_func = None  # progress lines are not errors

        def progress(line: str) -> None:
            self.stderr.write(f"evaluate_models: {line}")
            self.stderr.flush()

        try:
            models = models_by_label(options["labels"]) if options["labels"] else default_models()
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not models:
            raise CommandError("no models to evaluate: train one first (manage.py train_model)")
        if options["clickstream"]:
            self._on_clickstream(models, options, progress)
            return
        try:
            comparison = compare_models(models, since=options["since"], progress=progress)
        except ModelError as exc:
            raise CommandError(f"a model could not be loaded: {exc}") from exc
        document = json.dumps(comparison.as_json(), indent=2)
        if options["json"] == "-":
            self.stdout.write(document)
            return
        since = comparison.since
        window = f"decided {f'from {since:%Y-%m-%d %H:%M} ' if since else ''}before "
        window += f"{comparison.known_before:%Y-%m-%d %H:%M} UTC"
        self.stdout.write(
            f"{comparison.n} decisions with a known outcome ({window}), "
            f"{comparison.buyers} of them bought"
        )
        self.stdout.write(
            figures_table(
                [(f"{e.model.label} ({e.model.state})", e.figures) for e in comparison.models]
            )
        )
        if comparison.n and any(math.isnan(e.figures.roc_auc) for e in comparison.models):
            self.stdout.write("(-: not known, every decision had the same outcome)")
        if options["json"]:
            Path(options["json"]).write_text(document + "\n", encoding="utf-8")
            self.stdout.write(f"written to {options['json']}")

    def _on_clickstream(self, models: Any, options: dict[str, Any], progress: Any) -> None:
        from offers.evaluation import score
        from offers.training import ClickstreamSource, clickstream_pauses
        from streaming.evaluation import figures

        path = options["clickstream"]
        source = ClickstreamSource(
            path,
            "log" if path == "log" else options["clickstream_format"],
            since=options["since"].timestamp() if options["since"] else None,
            users=options["users"],
        )
        try:
            pauses = clickstream_pauses(source, progress=progress)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for model in models:
            if warning := model.replay_pause_warning(settings.PAUSE_SECONDS):
                self.stderr.write(warning)
        truth = pauses.y.astype(np.float64)
        rows = [(model, figures(truth, score(model, pauses.X))) for model in models]
        document = json.dumps(
            {
                "clickstream": path,
                "models": [{"model": model.label, **f.as_dict()} for model, f in rows],
            },
            indent=2,
        )
        if options["json"] == "-":
            self.stdout.write(document)
            return
        self.stdout.write(
            f"{len(pauses)} real pauses of {path}, {int((pauses.y == 0).sum())} of them bought"
        )
        self.stdout.write(figures_table([(f"{m.label} ({m.state})", f) for m, f in rows]))
        if options["json"]:
            Path(options["json"]).write_text(document + "\n", encoding="utf-8")


def _moment(text: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(text) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment
