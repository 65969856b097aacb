from __future__ import annotations

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from benchmarks import (
    BenchError,
    Benchmark,
    Progress,
    Report,
    calibration,
    dashboard,
    decisions,
    detector,
    ingest,
    layer,
    realdata,
    record,
    redis,
    scoring,
)

# To add a benchmark: a module in benchmarks/ exposing BENCHMARK, and a line here.
BENCHMARKS: dict[str, Benchmark] = {
    "ingest": ingest.BENCHMARK,
    "decisions": decisions.BENCHMARK,
    "scoring": scoring.BENCHMARK,
    "detector": detector.BENCHMARK,
    "dashboard": dashboard.BENCHMARK,
}
# Benchmarks that need services besides Python (Redis, PostgreSQL) run only when named, so that
# `bench all` runs on any machine.
NAMED_ONLY: dict[str, Benchmark] = {
    "redis": redis.BENCHMARK,
    "layer": layer.BENCHMARK,
    "record": record.BENCHMARK,
    # reads a sample that is not shipped
    "realdata": realdata.BENCHMARK,
    # compares the generator with real shoppers, measures no speed
    "calibration": calibration.BENCHMARK,
}
ALL = "all"


class AllReport:
    """Every benchmark's report, in the order they ran."""

    def __init__(self, reports: dict[str, Report]) -> None:
        self.reports = reports

    def table(self) -> str:
        return "\n\n".join(report.table() for report in self.reports.values())

    def as_dict(self) -> dict[str, Any]:
        return {name: report.as_dict() for name, report in self.reports.items()}


def defaults(benchmark: Benchmark) -> dict[str, Any]:
    """A benchmark's options as its command line leaves them when none is given."""
    parser = ArgumentParser(add_help=False)
    benchmark.add_arguments(parser)
    return vars(parser.parse_args([]))


class Command(BaseCommand):
    help = (
        "Run a benchmark beside its baseline in one run (or `all` of them, with their defaults); "
        "progress on stderr, the table on stdout (docs/BENCHMARKS.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_subparsers(dest="which", metavar="which", required=True)
        for name, benchmark in (BENCHMARKS | NAMED_ONLY).items():
            sub = which.add_parser(name, help=benchmark.help, description=benchmark.help)
            benchmark.add_arguments(sub)
            sub.add_argument("--json", type=Path, help="also write the figures as JSON here")
        every = f"every benchmark with its defaults: {', '.join(BENCHMARKS)}"
        sub = which.add_parser(ALL, help=every, description=every)
        sub.add_argument("--json", type=Path, help="also write the figures as JSON here")

    def handle(self, *_args: Any, **options: Any) -> None:
        name = options["which"]
        # Progress lines are not errors: plain text, whatever the terminal.
        self.stderr.style_func = None
        report: Report
        try:
            if name == ALL:
                report = AllReport(
                    {
                        each: benchmark.run(defaults(benchmark), self.progress(each))
                        for each, benchmark in BENCHMARKS.items()
                    }
                )
            else:
                report = (BENCHMARKS | NAMED_ONLY)[name].run(options, self.progress(name))
        except BenchError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(report.table())
        if options["json"] is not None:
            options["json"].write_text(json.dumps(report.as_dict(), indent=2) + "\n")
            self.progress(name)(f"figures written to {options['json']}")

    def progress(self, name: str) -> Progress:
        def say(line: str) -> None:
            self.stderr.write(f"bench {name}: {line}")
            self.stderr.flush()

        return say
