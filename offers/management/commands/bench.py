from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from offers.bench import BenchError, Benchmark, ingest

# To add a benchmark: a module in offers/bench/ exposing BENCHMARK, and a line here.
BENCHMARKS: dict[str, Benchmark] = {
    "ingest": ingest.BENCHMARK,
}


class Command(BaseCommand):
    help = (
        "Run a benchmark beside its baseline in one run; progress on stderr, the table on stdout "
        "(docs/BENCHMARKS.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_subparsers(dest="which", metavar="which", required=True)
        for name, benchmark in BENCHMARKS.items():
            sub = which.add_parser(name, help=benchmark.help, description=benchmark.help)
            benchmark.add_arguments(sub)
            sub.add_argument("--json", type=Path, help="also write the figures as JSON here")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["which"]
        # Progress lines are not errors: plain text, whatever the terminal.
        self.stderr.style_func = None

        def progress(line: str) -> None:
            self.stderr.write(f"bench {name}: {line}")
            self.stderr.flush()

        try:
            report = BENCHMARKS[name].run(options, progress)
        except BenchError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(report.table())
        if options["json"] is not None:
            options["json"].write_text(json.dumps(report.as_dict(), indent=2) + "\n")
            progress(f"figures written to {options['json']}")
