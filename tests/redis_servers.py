"""Redis servers of the tests' own on free local ports: one Redis (`RedisServer`) and a real
Redis Cluster of three masters (`LocalCluster`).

Each keeps every write in an append-only file synced on each write, as docs/DEPLOY.md asks of
production, so a server killed and started again has all it acknowledged.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import service_missing
from tests.subprocesses import free_port

MASTERS = 3
# A node also listens on its port + 10,000 for the cluster bus: ports from here leave room.
LOWEST_PORT, HIGHEST_PORT = 20_000, 55_000


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port is free too."""
    for _ in range(1000):
        port = random.randint(LOWEST_PORT, HIGHEST_PORT)
        if port not in taken and bindable(port) and bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_redis_server(port: int, directory: Path, *options: str) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:`port`, its files in `directory`, once it answers."""
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(directory),
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not answers(port):
        assert time.monotonic() < deadline, f"redis-server on {port} did not start"
        time.sleep(0.05)
    return process


class RedisServer:
    """One Redis of the test's own on a free port."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            service_missing("redis-server")
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.process = start_redis_server(self.port, self.directory)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


class LocalCluster:
    def __init__(self, directory: Path) -> None:
        for program in ("redis-server", "redis-cli"):
            if shutil.which(program) is None:
                service_missing(program)
        self.directory = directory
        self.ports: list[int] = []
        for _ in range(MASTERS):
            self.ports.append(cluster_port(set(self.ports)))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        try:
            self._create()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        for port in self.ports:
            self.start(port)
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")
        self.wait_ok()

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, port: int) -> None:
        node = self.directory / str(port)
        node.mkdir(parents=True, exist_ok=True)
        self.processes[port] = start_redis_server(
            port,
            node,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(node / "nodes.conf"),
            "--cluster-node-timeout",
            "1000",
        )

    def port_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot."""
        slot = int(
            subprocess.run(
                ["redis-cli", "-p", str(self.ports[0]), "cluster", "keyslot", key],
                capture_output=True,
                text=True,
                check=True,
                timeout=5,
            ).stdout
        )
        for port in self.ports:
            for start, end in self._slots_of(port):
                if start <= slot <= end:
                    return port
        raise AssertionError(f"no master serves slot {slot}")

    def _slots_of(self, port: int) -> list[tuple[int, int]]:
        nodes = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "nodes"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout
        mine = next(line for line in nodes.splitlines() if "myself" in line)
        ranges = []
        for part in mine.split()[8:]:
            start, _, end = part.partition("-")
            ranges.append((int(start), int(end or start)))
        return ranges

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says the cluster is ok (all slots served)."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                subprocess.run(
                    ["redis-cli", "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                for port in self.ports
            ]
            if all("cluster_state:ok" in state for state in states):
                return
            assert time.monotonic() < deadline, f"the cluster is not ok: {states}"
            time.sleep(0.1)

    def key_counts(self) -> list[int]:
        """How many keys each master holds."""
        return [
            int(
                subprocess.run(
                    ["redis-cli", "-p", str(port), "dbsize"],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=5,
                ).stdout
            )
            for port in self.ports
        ]

    def flush(self) -> None:
        for port in self.ports:
            subprocess.run(
                ["redis-cli", "-p", str(port), "flushall"],
                check=True,
                timeout=10,
                capture_output=True,
            )

    def stop(self) -> None:
        for port in list(self.processes):
            process = self.processes.pop(port)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class OwnRedis:
    """A test's REDIS_URL: one Redis of its own, or the test run's cluster, flushed."""

    def __init__(self, directory: Path, cluster: LocalCluster | None) -> None:
        self.cluster = cluster
        self.server = None if cluster is not None else RedisServer(directory)
        if cluster is not None:
            cluster.flush()
            self.url = cluster.url
        else:
            assert self.server is not None
            self.url = self.server.url

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()
