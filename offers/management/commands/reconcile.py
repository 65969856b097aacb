from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Check the record against itself and Redis: offer decisions without their offer, offers "
        "whose decision is not an offer, pauses decided twice, budgets overspent, purchases and "
        "offer marks acknowledged but not applied, offers in Redis with no record, records stuck "
        "on their way. Exits 1 and lists what is off."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--since",
            type=_moment,
            default=None,
            help="check only what happened from this moment on (ISO 8601, UTC unless given)",
        )

    def handle(self, *_args: Any, **options: Any) -> None:
        from offers.reconcile import reconcile

        findings = reconcile(since=options["since"], redis_url=settings.REDIS_URL)
        off = 0
        for finding in findings:
            status = self.style.ERROR("OFF") if finding.off else self.style.SUCCESS("ok ")
            line = f"{status} {finding.check}"
            if finding.off:
                line += f": {finding.off}"
            if finding.note:
                line += f" ({finding.note})"
            self.stdout.write(line)
            for example in finding.examples:
                self.stdout.write(f"      {example}")
            off += finding.off
        if off:
            self.stdout.write(self.style.ERROR(f"{off} things off in the record"))
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS("the record is whole"))


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ArgumentTypeError(f"not an ISO 8601 moment: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
