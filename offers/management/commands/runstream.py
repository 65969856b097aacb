from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run a stream worker on its own (Redis mode only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            self.stderr.write(
                "runstream needs REDIS_URL: in embedded mode `serve` runs the stream worker itself"
            )
            raise SystemExit(2)
        self.stderr.write("runstream: Redis mode is not available in this version yet")
        raise SystemExit(2)
