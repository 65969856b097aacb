"""`bench calibration`: what the generator's personas stand for, beside real shoppers.

The statistics of `streaming.calibration` side by side: the UCI Online Shoppers table (shipped
as a fixture), the REES46 sample's shoppers of an even `user_id` (its path as an argument; the
odd half is held out for `bench realdata`, and the sample is not shipped), and sessions of the
generator, with the targets the generator is fitted to. It measures no speed.
"""

from __future__ import annotations

from argparse import ArgumentParser
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import Benchmark, Progress, bounded_int
from streaming import calibration
from streaming.calibration import Figures
from streaming.clickstream import read_rees46
from streaming.generator import generate_sessions

UCI_FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "tests/fixtures/online_shoppers/online_shoppers_intention.csv"
)


@dataclass
class CalibrationReport:
    columns: list[Figures] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def table(self) -> str:
        notes = [f"skipped: {reason}" for reason in self.skipped]
        return "\n".join([calibration.table(self.columns), *notes])

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": {column.source: column.values for column in self.columns},
            "targets": [
                {"statistic": t.statistic, "value": t.value, "source": t.source}
                | {"tolerance": t.tolerance, "generator": self.generated(t.statistic)}
                for t in calibration.TARGETS
            ],
            "skipped": self.skipped,
        }

    def generated(self, statistic: str) -> float | None:
        return self.columns[-1][statistic] if self.columns else None


def run(options: Mapping[str, Any], progress: Progress) -> CalibrationReport:
    report = CalibrationReport()
    uci = Path(options["uci"])
    if uci.is_file():
        progress(f"reading {uci}")
        report.columns.append(calibration.of_uci(uci))
    else:
        report.skipped.append(f"no UCI table at {uci}")
    rees46 = Path(options["rees46"] or "")
    if options["rees46"] and rees46.is_file():
        progress(f"reading {rees46}")
        even = calibration.even_users(read_rees46(rees46).sessions)
        progress(f"measuring {len(even):,} sessions of an even user_id")
        report.columns.append(calibration.of_sessions(even, source=calibration.REES46_EVEN))
    else:
        report.skipped.append(
            f"no REES46 sample at {options['rees46'] or '(none given)'} (give its path: bench "
            "calibration --rees46 PATH; the sample is not shipped, its licence being unverified)"
        )
    count = options["sessions"]
    progress(f"generating {count:,} shoppers (seed {options['seed']})")
    sessions = generate_sessions(
        count, seed=options["seed"], progress=lambda done, n: progress(f"generated {done:,}/{n:,}")
    )
    report.columns.append(
        calibration.of_sessions(
            calibration.as_clicksessions(sessions),
            source="generator",
            progress=lambda done, n: progress(f"measured {done:,}/{n:,}"),
        )
    )
    for reason in report.skipped:
        progress(f"skipped: {reason}")
    return report


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--rees46",
        default=None,
        help="the REES46 sample (CSV), which is not shipped; only its even user_ids are read",
    )
    parser.add_argument("--uci", default=str(UCI_FIXTURE), help="the UCI Online Shoppers table")
    parser.add_argument("--sessions", type=bounded_int(100, 1_000_000), default=20_000)
    parser.add_argument("--seed", type=int, default=0)


BENCHMARK = Benchmark(
    help="the generator's statistics beside the UCI Online Shoppers table and the even half of "
    "the REES46 sample (path as an argument), with the targets it is fitted to",
    add_arguments=add_arguments,
    run=run,
)
