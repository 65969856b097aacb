from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Replay a clickstream (the event log, or a file) through the detector, a model and the "
        "offer rules, as the live worker would have decided it: decisions by outcome, offers, "
        "budget use, and the model's ROC-AUC on what shoppers really did, beside the active "
        "model's on the same pauses."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--clickstream",
            required=True,
            help="'log' (the event log, EVENT_LOG), or a file or directory to import",
        )
        parser.add_argument(
            "--format",
            default=None,
            choices=["log", "events", "rees46", "otto"],
            help="the clickstream's format (default: log for 'log', else events)",
        )
        parser.add_argument("--model", help="a model's version or label (default: the active)")
        parser.add_argument(
            "--rules", default="current", help="'current' (the active rules) or a JSON file"
        )
        parser.add_argument("--since", help="from this moment (ISO 8601 or Unix seconds)")
        parser.add_argument("--until", help="up to this moment (ISO 8601 or Unix seconds)")
        parser.add_argument("--pause-seconds", type=float, default=None)
        parser.add_argument(
            "--users", choices=["even", "odd"], help="only shoppers with an even (or odd) user id"
        )
        parser.add_argument(
            "--json", dest="json_path", help="also write the figures here ('-': stdout)"
        )
        parser.add_argument(
            "--decisions",
            dest="decisions_path",
            help="write each pause's decision by the first model here (JSON lines)",
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        from offers.backtest import rules_from_file, run_backtest
        from offers.models import ScoringModel
        from offers.rulebook import _load_rules
        from streaming.clickstream import from_log, read_clickstream, replay
        from streaming.eventlog import read_log
        from streaming.scoring import load_model

        # The rules first: a bad file is said at once, not after the whole replay.
        try:
            rules = (
                _load_rules()
                if options["rules"] == "current"
                else rules_from_file(options["rules"])
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        source, fmt = options["clickstream"], options["format"]
        since, until = _moment(options["since"]), _moment(options["until"])
        if source == "log":
            if not settings.EVENT_LOG:
                raise CommandError("EVENT_LOG is off: there is no event log to replay")
            read = from_log(read_log(settings.EVENT_LOG, since=since, until=until))
        else:
            try:
                read = read_clickstream(source, fmt or "events")
            except (OSError, ValueError) as exc:
                raise CommandError(str(exc)) from exc
            read.sessions = [
                s
                for s in read.sessions
                if (since is None or s.events[0][0] >= since)
                and (until is None or s.events[0][0] < until)
            ]
        if options["users"]:
            from offers.training import user_half

            read.sessions = [s for s in read.sessions if user_half(s.user) == options["users"]]
        pause_seconds = options["pause_seconds"] or settings.PAUSE_SECONDS
        replayed = replay(
            read.sessions,
            pause_seconds=pause_seconds,
            outcome_window=settings.OUTCOME_WINDOW_SECONDS,
        )
        self.stderr.write(
            f"{len(read.sessions)} sessions ({read.skipped} rows skipped), {len(replayed)} pauses "
            f"of {pause_seconds:g} s, {int(replayed.y.sum())} abandoned"
        )
        active = ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE).first()
        wanted = _model(options["model"]) if options["model"] else active
        if wanted is None:
            raise CommandError("no model given and none active")
        models = [wanted] + ([active] if active is not None and active.pk != wanted.pk else [])
        for model in models:
            if warning := model.replay_pause_warning(pause_seconds):
                self.stderr.write(warning)
        results = [
            run_backtest(
                replayed,
                load_model(bytes(model.artifact), label=model.label),
                rules=rules,
                cooldown_seconds=settings.OFFER_COOLDOWN_SECONDS,
                holdout_percent=settings.HOLDOUT_PERCENT,
            )
            for model in models
        ]
        header = f"{'model':<16}{'pauses':>8}{'offer':>8}{'holdout':>9}{'no_offer':>10}{'discount':>11}  ROC-AUC (95% CI)        PR-AUC (95% CI)"
        self.stdout.write(header)
        for result in results:
            outcomes = result.as_json()["outcomes"]
            self.stdout.write(
                f"{result.model:<16}{result.pauses:>8}{outcomes['offer']:>8}"
                f"{outcomes['holdout']:>9}{outcomes['no_offer']:>10}{result.discount:>11.2f}  "
                f"{_ci(result.roc_auc):<24}{_ci(result.pr_auc)}"
            )
        for result in results[:1]:
            for day, spent in result.budget.items():
                used = ", ".join(f"rule {rule}: {count}" for rule, count in sorted(spent.items()))
                self.stdout.write(f"budget used on {day} ({result.model}): {used}")
        if options["decisions_path"]:
            with open(options["decisions_path"], "w") as file:
                file.writelines(json.dumps(d) + "\n" for d in results[0].decisions)
        if options["json_path"]:
            text = json.dumps({"models": [r.as_json() for r in results]}, indent=2)
            if options["json_path"] == "-":
                sys.stdout.write(text + "\n")
            else:
                with open(options["json_path"], "w") as file:
                    file.write(text + "\n")


def _ci(figure: dict[str, float | None]) -> str:
    if figure["estimate"] is None:
        return "-"
    return f"{figure['estimate']:.3f} ({figure['low']:.3f}-{figure['high']:.3f})"


def _moment(text: str | None) -> float | None:
    if text is None:
        return None
    from streaming.clickstream import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise CommandError(f"not a moment: {text!r}") from exc


def _model(which: str) -> Any:
    from offers.models import ScoringModel

    query = ScoringModel.objects.all()
    if "@" in which:
        name, _, version = which.partition("@")
        query = query.filter(name=name, version=version)
    elif which.isdigit():
        query = query.filter(version=int(which))
    else:
        raise CommandError(f"--model wants a version or a label, not {which!r}")
    found = query.order_by("-version").first()
    if found is None:
        raise CommandError(f"no model {which!r}")
    return found
