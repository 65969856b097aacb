"""Shared fixtures: personas of shoppers and sites, and real server processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from offers.runtime import Runtime

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def service_missing(what: str) -> None:
    """Skip a test whose service is missing, or fail it when CI requires every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (REQUIRE_SERVICES=1) but does not answer")
    pytest.skip(f"{what} does not answer")


def pytest_configure() -> None:
    from django.conf import settings

    # Users are made by the hundred in tests: a slow password hash there only slows the suite.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Runtimes built inside the test process keep their journal in memory (the servers that
    # tests start keep theirs beside their own database).
    settings.RECORD_JOURNAL = None
    # ... and write no clickstream (tests of the log give it a directory).
    settings.EVENT_LOG = None
    # ... and explore nothing at random (tests of exploration set it).
    settings.EXPLORE_PERCENT = 0.0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran servers or workers shows the end of their logs (they write them
    beside the test's files), so that a failure in CI says what the processes saw."""
    report = yield
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and call.when == "call" and isinstance(tmp, Path):
        for log in sorted(tmp.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-80:]
            report.sections.append((f"last lines of {log.name}", "\n".join(lines)))
    return report


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """A fresh in-memory runtime (store, delivery, worker) and no cached sites; used automatically
    by the tests of the Django app (tests/offers/conftest.py)."""
    from offers.runtime import reset_runtime
    from offers.sites import forget_sites

    forget_sites()
    yield reset_runtime()
    forget_sites()


@pytest.fixture
def demo_site(db):  # noqa: ARG001  # db: for database access
    from offers.models import Site

    return Site.objects.create(key="demo", name="Demo shop", allowed_origins="*")


@pytest.fixture
def strict_site(db):  # noqa: ARG001  # db: for database access
    """A shop that accepts events only from its own pages."""
    from offers.models import Site

    return Site.objects.create(
        key="strict",
        name="Strict shop",
        allowed_origins="https://shop.example\nhttps://www.shop.example",
    )


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Redis Cluster of three masters of the test run's own (tests/redis_servers.py), started once."""
    from tests.redis_servers import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(params=["redis", "cluster"])
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A test's Redis, once one Redis of its own and once the run's three-master cluster."""
    from tests.redis_servers import OwnRedis

    cluster = request.getfixturevalue("redis_cluster") if request.param == "cluster" else None
    redis = OwnRedis(tmp_path, cluster)
    yield redis
    redis.kill()
