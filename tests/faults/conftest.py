"""What the fault tests share: a PostgreSQL server of their own, to stop and start at will."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.subprocesses import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def _postgres_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.glob("*/bin/pg_ctl")) if root.exists() else []
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


class PrivatePostgres:
    """A PostgreSQL cluster in a directory of the test's own, on a free port (trust auth)."""

    def __init__(self) -> None:
        # Its own directory under /tmp: pytest's are private to root, and PostgreSQL runs as
        # the postgres user when the tests run as root.
        directory = Path(tempfile.mkdtemp(prefix="liveoffers-pg-"))
        self.root = directory
        bin_dir = _postgres_bin()
        if bin_dir is None:
            service_missing("PostgreSQL's server programs (initdb, pg_ctl)")
        assert bin_dir is not None
        self.bin = bin_dir
        self.port = free_port()
        self.directory = directory / "pgdata"
        self.socket_dir = directory / "pgsocket"
        self.socket_dir.mkdir()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/liveoffers"
        # PostgreSQL refuses to run as root: the cluster belongs to the postgres user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(directory, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.directory),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        )
        self.start()
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "liveoffers",
        )

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as, *command], capture_output=True, text=True, check=False, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c fsync=off -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.directory),
            "-o",
            options,
            "-l",
            str(self.directory.parent / "postgres.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop it the way a crash or a restart would: connections are cut at once."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.directory), "-m", "immediate", "stop")

    def destroy(self) -> None:
        subprocess.run(
            [
                *self._as,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.directory),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.destroy()


def wait_for(condition, timeout: float, what: str, every: float = 0.2):
    """Poll `condition()` until it returns something true; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
