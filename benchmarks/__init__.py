"""Benchmarks run by `manage.py bench WHICH`; each runs the project beside its baseline.

A benchmark is a module exposing `BENCHMARK`; `benchmarks/management/commands/bench.py` lists them;
what they share (processes, throw-away databases, tables) is in `benchmarks/harness.py`.
Figures and how to reproduce them: docs/BENCHMARKS.md.
"""

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Progress = Callable[[str], None]


class BenchError(RuntimeError):
    """A benchmark could not measure what it should (a server would not start, a frame was refused)."""


class Report(Protocol):
    def table(self) -> str:
        """The figures as the text table printed on stdout."""
        ...

    def as_dict(self) -> dict[str, Any]:
        """The figures for `--json`."""
        ...


@dataclass(frozen=True)
class Benchmark:
    help: str
    add_arguments: Callable[[ArgumentParser], None]
    run: Callable[[Mapping[str, Any], Progress], Report]


# --- argparse types for the benchmarks' options ------------------------------------------------


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high`."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ArgumentTypeError(f"must be from {low:,} to {high:,}, got {text}")
        return value

    return parse


def bounded_ints(low: int, high: int) -> Callable[[str], list[int]]:
    """Comma-separated whole numbers, each from `low` to `high`."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",")]
        except ValueError:
            raise ArgumentTypeError(f"a comma-separated list of counts, got {text!r}") from None
        if not all(low <= value <= high for value in values):
            raise ArgumentTypeError(f"each count from {low:,} to {high:,}, got {text}")
        return values

    return parse


def bounded_float(low: float, high: float, *, above_low: bool = False) -> Callable[[str], float]:
    """A number from `low` (or, with `above_low`, above it) to `high`."""

    def parse(text: str) -> float:
        value = float(text)
        if not (low < value if above_low else low <= value) or not value <= high:
            bounds = f"above {low:g} and at most" if above_low else f"from {low:g} to"
            raise ArgumentTypeError(f"must be {bounds} {high:g}, got {text}")
        return value

    return parse
