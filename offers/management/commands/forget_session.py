from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Delete one session's events from the event log (EVENT_LOG) and its decisions, offers "
        "and marks from the database, as a shopper may ask."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("session", help="the session id (as in /api/decisions/ and the admin)")

    def handle(self, *_args: Any, **options: Any) -> None:
        from offers.privacy import session_forget

        gone = session_forget(options["session"])
        self.stdout.write(", ".join(f"{count} {what}" for what, count in gone.items()) + " deleted")
