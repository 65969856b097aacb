"""Benchmarks run by `manage.py bench WHICH`; each runs the project beside its baseline.

A benchmark is a module exposing `BENCHMARK`; `offers/management/commands/bench.py` lists them.
Figures and how to reproduce them: docs/BENCHMARKS.md.
"""

from __future__ import annotations

from argparse import ArgumentParser
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
