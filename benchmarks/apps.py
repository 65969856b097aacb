from __future__ import annotations

from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    """The `bench` and `simulate` commands: tooling beside the app, never imported by it."""

    name = "benchmarks"
    verbose_name = "Benchmarks and simulated shoppers"
