"""`bench record`: how fast one process's recorder writes the journal to the database.

A journal (`FileJournal` in a directory, as embedded mode keeps it) is filled with N decisions
like the worker's: the 16 features, a risk, 30% of them offers (with their `OfferMade`) and a
tenth as many holdouts, each of these with its three reasons (`--offers`). Then `Recorder.step`
is called, one batch (2,000 records) after the other, until the journal is empty: the records
over that time are the recorder's sustained rate. Three workloads, one after the other:

- inline: each decision with its reasons in its own record;
- reasons after: the worker's pattern, decisions without reasons in steps of 100 (a decider
  step), each step's `ReasonsMade` records after the next step's decisions (worked out while
  the next pauses were decided);
- marks: `offer_shown` and a purchase for every other offer of `reasons after`, applied to
  its decision.

Each on SQLite and on PostgreSQL (`--database`), in a throw-away database migrated and given the
demo shop's catalogue, offer rules and a model row (no training: the recorder only looks the
model up). The recorder runs in a process of its own started with that database's settings, as
a server would (`python -m benchmarks.record`), pinned to a core where there are two; a warm-up
of 100 decisions is written and deleted first, and each decision workload starts from empty
tables. After each workload the database is checked: every decision, offer, reason and mark in
and applied.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from argparse import ArgumentParser
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import BenchError, Benchmark, Progress, bounded_float, bounded_int
from benchmarks.harness import (
    BASE_DIR,
    bench_env,
    describe_cores,
    figure,
    machine,
    pin_plan,
    pinned,
    prepare_database,
    row,
    stopped_by_sigterm,
    throwaway_postgres,
)
from benchmarks.redis import POSTGRES_URL, postgres_about
from streaming.features import FEATURE_NAMES
from streaming.journal import FileJournal, Journal
from streaming.policy import Outcome, new_offer_code, new_offer_id
from streaming.records import DecisionMade, MarkMade, OfferMade, ReasonsMade, Record

DATABASES = ("sqlite", "postgres")
BOTH = "both"
INLINE = "inline"
REASONS_AFTER = "reasons after"
MARKS = "marks"
WORKLOADS = (INLINE, REASONS_AFTER, MARKS)
SITE = "demo"
MODEL = "cart-risk@1"
# Decisions a decider step makes in a burst, whose reasons follow as one batch of records.
STEP = 100
WARMUP = 100
REASONS = 3  # Scorer.reasons: the top three features
# The decisions' clock: 4,000 a second, as in a burst of 2,000 carts paced over half a second.
DECISIONS_PER_SECOND = 4_000.0

# The demo shop's catalogue and offer rules (bootstrap_demo without training), and a row for the
# decisions' model to refer to.
PREPARE = (
    "shell",
    "-v",
    "0",
    "-c",
    "from offers.management.commands.bootstrap_demo import Command\n"
    "from offers.models import ScoringModel\n"
    "Command().ensure_catalogue()\n"
    "ScoringModel.objects.get_or_create(name='cart-risk', version=1, defaults={\n"
    "    'artifact': b'', 'artifact_format': 'ubj', 'state': 'retired'})\n",
)


# --- the figures -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drained:
    """One workload written by the recorder, until the journal was empty."""

    database: str
    workload: str
    records: int  # journal records
    decisions: int  # of which decisions (0: marks only)
    seconds: float
    cpu_seconds: float  # the recorder process's CPU time (all its threads) over the same time
    batch_ms: list[float] = field(default_factory=list)  # each Recorder.step

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def decisions_per_second(self) -> float | None:
        return self.decisions / self.seconds if self.decisions and self.seconds > 0 else None

    @property
    def records_per_cpu_second(self) -> float:
        """What the recorder would write with a core of its own and a database that never
        made it wait."""
        return self.records / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        """The recorder's process busy, in cores: the rest of the time it waited for the database."""
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RecordReport:
    records: int
    offers_percent: float
    batch_size: int
    placement: str
    services: dict[str, str] = field(default_factory=dict)
    drained: list[Drained] = field(default_factory=list)

    def table(self) -> str:
        holdouts = self.offers_percent / 10
        services = ", ".join(self.services.values())
        rows = [
            f"record (Recorder.step, batches of {self.batch_size:,}, until the journal is empty; "
            f"{self.records:,} decisions, {self.offers_percent:g}% offers and {holdouts:g}% "
            f"holdouts with their reasons; {self.placement}; {services})",
            _row(
                "database",
                "workload",
                "records",
                "decisions",
                "seconds",
                "records/s",
                "decisions/s",
                "per CPU s",
                "batch p50",
                "batch max",
                "recorder",
            ),
        ]
        for drained in self.drained:
            per_decision = drained.decisions_per_second
            rows.append(
                _row(
                    drained.database,
                    drained.workload,
                    f"{drained.records:,}",
                    f"{drained.decisions:,}" if drained.decisions else "-",
                    f"{drained.seconds:.2f}",
                    f"{drained.records_per_second:,.0f}",
                    "-" if per_decision is None else f"{per_decision:,.0f}",
                    f"{drained.records_per_cpu_second:,.0f}",
                    figure(statistics.median(drained.batch_ms)) if drained.batch_ms else "-",
                    figure(max(drained.batch_ms, default=None)),
                    f"{drained.cpu_share:.0%}",
                )
            )
        rows.append(
            "inline: reasons in the decision's record; reasons after: decisions in steps of "
            f"{STEP}, each step's reasons as ReasonsMade records after the next step's decisions; "
            "marks: offer_shown and a purchase for every other offer, applied to its decision; "
            "per CPU s: records per second of the recorder process's CPU time; batch: ms a "
            "Recorder.step; recorder: its process's CPU time over the wall time, in % of one core"
        )
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "offers_percent": self.offers_percent,
            "batch_size": self.batch_size,
            "placement": self.placement,
            "services": self.services,
            "machine": machine(),
            "drained": [
                asdict(d)
                | {
                    "records_per_second": d.records_per_second,
                    "records_per_cpu_second": d.records_per_cpu_second,
                    "decisions_per_second": d.decisions_per_second,
                    "cpu_share": d.cpu_share,
                }
                for d in self.drained
            ],
        }


def _row(first: str, *cells: str) -> str:
    return row(first, *cells, widths=(10, 15, 9, 11, 9, 11, 13, 11, 11))


# --- the records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    discount_percent: int
    title: str
    message: str


def features(rng: random.Random, at: float) -> dict[str, float]:
    """A shopper's features at a pause: a cart of a few lines, a visit of a few minutes."""
    lines = rng.randint(1, 4)
    quantity = lines + rng.randint(0, 3)
    views = rng.randint(lines, 30)
    session_seconds = rng.uniform(60, 1800)
    values = {
        "cart_value": quantity * rng.choice((14.0, 29.0, 69.0, 99.0, 129.0, 249.0)),
        "cart_lines": lines,
        "cart_quantity": quantity,
        "distinct_products": min(64, views),
        "product_views": views,
        "page_views": views + rng.randint(0, 20),
        "views_since_add": rng.randint(0, 8),
        "seconds_since_add": rng.uniform(1, session_seconds),
        "session_seconds": session_seconds,
        "searches": rng.randint(0, 5),
        "adds": quantity + rng.randint(0, 2),
        "removes": rng.randint(0, 2),
        "hidden": rng.random() < 0.2,
        "checkout_started": rng.random() < 0.3,
        "offers_seen": rng.randint(0, 2),
        "hour_of_day": time.gmtime(at).tm_hour,
    }
    return {name: round(float(values[name]), 4) for name in FEATURE_NAMES}


def reasons_of(rng: random.Random, shown: Mapping[str, float]) -> list[dict[str, Any]]:
    return [
        {"feature": name, "value": shown[name], "contribution": rng.uniform(-1.5, 1.5)}
        for name in rng.sample(FEATURE_NAMES, REASONS)
    ]


def decisions(
    count: int, *, offers_percent: float, rules: Sequence[Rule], seed: int, start: float
) -> list[DecisionMade]:
    """`count` decisions as a worker makes them, reasons included; every session its own."""
    rng = random.Random(seed)
    made = []
    for number in range(count):
        at = start + number / DECISIONS_PER_SECOND
        session = base64.urlsafe_b64encode(rng.randbytes(12)).decode()  # as new_session_id
        shown = features(rng, at)
        decision = DecisionMade(
            session_id=session,
            site=SITE,
            pause_key=f"{session}:{rng.randint(2, 40)}",
            deadline=at - 0.001,
            at=at,
            outcome=Outcome.NO_OFFER,
            risk=rng.random(),
            shadow_risk=None,
            model=MODEL,
            shadow_model="",
            features=shown,
            cart_value=shown["cart_value"],
        )
        draw = rng.uniform(0, 100)
        if draw < offers_percent * 1.1:
            rule = rng.choice(rules)
            decision.rule_id = rule.id
            decision.reasons = reasons_of(rng, shown)
            if draw < offers_percent:
                decision.outcome = Outcome.OFFER
                decision.sent_at = at + 0.002
                decision.offer = OfferMade(
                    offer_id=new_offer_id(),
                    code=new_offer_code(rule.discount_percent),
                    rule_id=rule.id,
                    title=rule.title,
                    message=rule.message,
                    discount_percent=rule.discount_percent,
                    created_at=at,
                    expires_at=at + 1800.0,
                )
            else:
                decision.outcome = Outcome.HOLDOUT
        made.append(decision)
    return made


def inline(made: Sequence[DecisionMade]) -> list[Record]:
    return list(made)


def reasons_after(made: Sequence[DecisionMade]) -> list[Record]:
    """Decisions without reasons, a step at a time; each step's reasons after the next step."""
    steps = [made[i : i + STEP] for i in range(0, len(made), STEP)]
    records: list[Record] = []
    for number, step in enumerate([*steps, []]):
        records += [_without_reasons(d) for d in step]
        if number:
            records += [ReasonsMade(d.pause_key, d.reasons) for d in steps[number - 1] if d.reasons]
    return records


def _without_reasons(decision: DecisionMade) -> DecisionMade:
    return dataclasses.replace(decision, reasons=[])


def marked(made: Sequence[DecisionMade]) -> list[DecisionMade]:
    """The decisions whose offer the marks workload marks: every other one."""
    return [d for d in made if d.offer is not None][::2]


def marks(made: Sequence[DecisionMade]) -> list[Record]:
    """For every other offer, the offer seen a couple of seconds after it came and the cart
    bought a while later."""
    records: list[Record] = []
    for d in marked(made):
        assert d.offer is not None
        records.append(MarkMade(d.session_id, d.offer.offer_id, "offer_shown", d.at + 2.0))
        records.append(MarkMade(d.session_id, None, "purchase", d.at + 30.0))
    return records


# --- the recorder's process (python -m benchmarks.record) --------------------------------------


async def drain(journal: Journal, records: Sequence[Record]) -> tuple[float, float, list[float]]:
    """Fill the journal, then step a recorder until it is empty: seconds, CPU seconds, and each
    step's milliseconds."""
    from offers.recorder import Recorder

    await journal.append(records)
    recorder = Recorder(journal)
    steps: list[float] = []
    cpu, start = time.process_time(), time.perf_counter()
    while journal.waiting():
        began = time.perf_counter()
        if not await recorder.step(time.time()):
            raise RuntimeError("the recorder could not write a batch (its log is above)")
        steps.append((time.perf_counter() - began) * 1e3)
    return time.perf_counter() - start, time.process_time() - cpu, steps


def empty_tables() -> None:
    from django.db import connection

    from offers.models import Decision, Mark, Offer

    with connection.cursor() as cursor:
        for model in (Mark, Offer, Decision):
            cursor.execute(f"DELETE FROM {model._meta.db_table}")


def check(made: Sequence[DecisionMade], *, with_marks: bool = False) -> None:
    """Every decision of `made` in the database, with its offer and reasons (and marks)."""
    from offers.models import Decision, Mark, Offer

    rows = Decision.objects.filter(pause_key__in=[d.pause_key for d in made])
    explained = sum(1 for d in made if d.reasons)
    offered = sum(1 for d in made if d.offer is not None)
    found = {
        "decisions": (rows.count(), len(made)),
        "offers": (Offer.objects.filter(decision__in=rows).count(), offered),
        "with reasons": (sum(1 for r in rows.values_list("reasons", flat=True) if r), explained),
    }
    if with_marks:
        bought = len(marked(made))
        found |= {
            "marks applied": (Mark.objects.filter(applied=True).count(), 2 * bought),
            "offers shown": (Offer.objects.exclude(shown_at=None).count(), bought),
            "decisions converted": (rows.exclude(converted_at=None).count(), bought),
        }
    wrong = {what: counts for what, counts in found.items() if counts[0] != counts[1]}
    if wrong:
        raise RuntimeError(f"the record is not what was journaled (found, expected): {wrong}")


async def record_workloads(
    *, records: int, offers_percent: float, journals: Path
) -> list[dict[str, Any]]:
    from channels.db import database_sync_to_async

    from offers.models import OfferRule

    rules = [
        Rule(rule.id, rule.discount_percent, rule.title, rule.message)
        async for rule in OfferRule.objects.filter(site__key=SITE)
    ]
    if not rules:
        raise RuntimeError(f"the site {SITE!r} has no offer rules: is the database prepared?")
    start = time.time() - 3600.0

    def made(count: int, seed: int) -> list[DecisionMade]:
        return decisions(count, offers_percent=offers_percent, rules=rules, seed=seed, start=start)

    def journal(name: str) -> FileJournal:
        return FileJournal(journals / name.replace(" ", "-"))

    # Connections opened, queries compiled: as in a server that has been running.
    await drain(journal("warmup"), inline(made(WARMUP, seed=0)))
    await database_sync_to_async(empty_tables)()

    figures = []
    decided = {}
    for number, workload in enumerate((INLINE, REASONS_AFTER), 1):
        decided[workload] = made(records, seed=number)
        journaled = (inline if workload == INLINE else reasons_after)(decided[workload])
        seconds, cpu, steps = await drain(journal(workload), journaled)
        await database_sync_to_async(check)(decided[workload])
        figures.append(_figures(workload, journaled, seconds, cpu, steps))
        if workload == INLINE:
            await database_sync_to_async(empty_tables)()
    journaled = marks(decided[REASONS_AFTER])
    seconds, cpu, steps = await drain(journal(MARKS), journaled)
    await database_sync_to_async(check)(decided[REASONS_AFTER], with_marks=True)
    figures.append(_figures(MARKS, journaled, seconds, cpu, steps))
    return figures


def _figures(
    workload: str, records: Sequence[Record], seconds: float, cpu: float, steps: list[float]
) -> dict[str, Any]:
    return {
        "workload": workload,
        "records": len(records),
        "decisions": sum(isinstance(r, DecisionMade) for r in records),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "batch_ms": steps,
    }


def recorder_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the recorder's process of `bench record`")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--offers", type=float, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    with tempfile.TemporaryDirectory(prefix="liveoffers-record-") as journals:
        try:
            figures = asyncio.run(
                record_workloads(
                    records=args.records, offers_percent=args.offers, journals=Path(journals)
                )
            )
        except RuntimeError as exc:
            sys.exit(f"recorder: {exc}")
    json.dump({"batch_size": _batch_size(), "workloads": figures}, sys.stdout)
    sys.stdout.write("\n")


def _batch_size() -> int:
    from offers.recorder import Recorder

    return Recorder(FileJournal()).batch_size


# --- the benchmark (manage.py bench record) ----------------------------------------------------


def run_recorder(
    env: dict[str, str], *, records: int, offers_percent: float, core: int | None
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.record",
        f"--records={records}",
        f"--offers={offers_percent:g}",
    ]
    try:
        done = subprocess.run(
            command,
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=300 + records * 0.02,
            check=False,
            preexec_fn=pinned(core),
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise BenchError("the recorder's process did not finish in time") from exc
    if done.returncode:
        raise BenchError(f"the recorder's process failed: {done.stderr.strip()[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


@contextlib.contextmanager
def database(
    kind: str, *, workdir: Path, postgres_url: str
) -> Iterator[tuple[dict[str, str], str]]:
    """The settings of a throw-away database of `kind`, and what it is."""
    # As in production: DEBUG=0 keeps Django from logging every query (in memory, too).
    env = bench_env(workdir) | {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "RECORD_JOURNAL": "off",  # its own journal is the one it fills
    }
    if kind == "sqlite":
        (workdir / "bench.sqlite3").unlink(missing_ok=True)
        yield env, f"SQLite {sqlite3.sqlite_version}"
        return
    with throwaway_postgres(postgres_url) as url:
        yield env | {"DATABASE_URL": url}, f"PostgreSQL {postgres_about(url)}"


def run(options: Mapping[str, Any], progress: Progress) -> RecordReport:
    (core,) = pin_plan(1)
    report = RecordReport(
        records=int(options["records"]),
        offers_percent=float(options["offers"]),
        batch_size=0,
        placement=f"{describe_cores('the recorder', [core])}, the database not pinned",
    )
    kinds = DATABASES if options["database"] == BOTH else (options["database"],)
    with contextlib.ExitStack() as stack:
        stack.enter_context(stopped_by_sigterm())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liveoffers-bench-")))
        for kind in kinds:
            with database(kind, workdir=workdir, postgres_url=options["postgres_url"]) as (
                env,
                about,
            ):
                report.services[kind] = about
                name = urllib.parse.urlsplit(env["DATABASE_URL"]).path.lstrip("/")
                progress(f"{kind}: preparing the database {name} (migrate, the demo catalogue)")
                prepare_database(env, then=PREPARE)
                progress(f"{kind}: recording {report.records:,} decisions, three ways")
                figures = run_recorder(
                    env, records=report.records, offers_percent=report.offers_percent, core=core
                )
            report.batch_size = figures["batch_size"]
            for each in figures["workloads"]:
                drained = Drained(database=kind, **each)
                report.drained.append(drained)
                progress(
                    f"{kind}, {drained.workload}: {drained.records:,} records in "
                    f"{drained.seconds:.2f} s, {drained.records_per_second:,.0f} records/s"
                )
    return report


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--records",
        type=bounded_int(WARMUP, 1_000_000),
        default=20_000,
        help="decisions in the journal (20,000)",
    )
    parser.add_argument(
        "--database",
        choices=(*DATABASES, BOTH),
        default=BOTH,
        help=f"the database written to ({BOTH})",
    )
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help=f"a PostgreSQL server where it may create and drop a database ({POSTGRES_URL})",
    )
    parser.add_argument(
        "--offers",
        type=bounded_float(0, 90),
        default=30.0,
        help="percent of the decisions that are offers; a tenth as many are holdouts (30)",
    )


BENCHMARK = Benchmark(
    help="the recorder: records/s one process writes from its journal to SQLite and PostgreSQL, "
    "decisions with reasons inline or after, and marks (PostgreSQL needed for `--database "
    "postgres` and `both`)",
    add_arguments=add_arguments,
    run=run,
)


if __name__ == "__main__":
    recorder_main()
