"""Running the project's own commands and servers as real processes, for end-to-end tests."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def project_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "REDIS_URL"}}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
            # every shopper of a test comes from one address (tests of these limits set them)
            "MAX_SOCKETS_PER_CLIENT": "100000",
            "CLIENT_RATE_EVENTS_PER_SECOND": "1e9",
            "CLIENT_RATE_BURST": "1000000000",
            # no offers or holdouts at random: tests of exploration set it
            "EXPLORE_PERCENT": "0",
        }
    )
    env.update(overrides)
    return env


def manage(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Command:
    """A `manage.py` command running in the background, its output in a log file."""

    log_path: Path
    process: subprocess.Popen[bytes]

    def launch(self, env: dict[str, str], log_name: str, *args: str) -> None:
        self.log_path = Path(env.get("LIVEOFFERS_TEST_DIR", "/tmp")) / log_name
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Server(Command):
    """`manage.py serve` on a free port, waited for until /healthz answers."""

    def __init__(self, env: dict[str, str], *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.launch(env, f"serve-{self.port}.log", "serve", "--port", str(self.port), *extra)
        self.wait_healthy()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"serve did not become healthy:\n{self.output()}")


class Worker(Command):
    """`manage.py runstream` (Redis mode), waited for until it says it started."""

    def __init__(self, env: dict[str, str], name: str, *args: str) -> None:
        self.launch(env, f"runstream-{name}.log", "runstream", *args)
        deadline = time.monotonic() + 30
        while "worker started" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"runstream did not start:\n{self.output()}")
            time.sleep(0.05)


# Every pause of a cart worth anything gets an offer, whatever the risk: the policy's own
# thresholds are covered by unit tests; here the loop is what is on trial.
GENEROUS_RULES = (
    "from offers.models import OfferRule; "
    "OfferRule.objects.update(min_risk=0, min_cart_value=0, daily_budget=1000000)"
)
# A small model, active before `bootstrap_demo` runs, spares it training the demo's (about 8 s a
# database): with the generous rules every paused cart gets an offer whatever its risk.
SMALL_MODEL = (
    "from offers.services import model_activate; from tests.factories import stored_model; "
    "model_activate(model=stored_model())"
)
STAFF_COOKIE = (
    "from django.contrib.auth.models import Permission, User; from django.test import Client; "
    "u, _ = User.objects.get_or_create(username='op', defaults={'is_staff': True}); "
    "u.user_permissions.add(Permission.objects.get(codename='view_decision')); "
    "c = Client(); c.force_login(u); print(c.cookies['sessionid'].value)"
)


def prepared_env(tmp: Path, **settings: str) -> tuple[dict[str, str], str]:
    """The project's settings for servers of a test, and a staff session cookie: a database
    migrated, with a small model active, the demo shop loaded and its rules generous.

    The first database prepared of each kind (SQLite, PostgreSQL) is kept as a template (a
    file, or a template database) and copied for the next tests: the commands take some 10 s a
    database.
    """
    env = project_env(
        **{
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
            "LIVEOFFERS_TEST_DIR": str(tmp),
            "HOLDOUT_PERCENT": "0",
            "RATE_BURST": "100000",
            **settings,
        }
    )
    url = env["DATABASE_URL"]
    # What the commands put in the database depends on no setting: one template a kind.
    kind = "postgres" if url.startswith("postgres") else "sqlite"
    template = _templates.get(kind)
    if template is not None:
        _copy_template(kind, template.source, url)
        return env, template.cookie
    for command in (
        ["migrate", "--noinput"],
        ["shell", "-v", "0", "-c", SMALL_MODEL],
        ["bootstrap_demo"],
        ["shell", "-v", "0", "-c", GENEROUS_RULES],
    ):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stderr
    cookie = manage("shell", "-v", "0", "-c", STAFF_COOKIE, env=env)
    assert cookie.returncode == 0, cookie.stderr
    _templates[kind] = _Template(_save_template(kind, url), cookie.stdout.strip())
    return env, cookie.stdout.strip()


@dataclass(frozen=True)
class _Template:
    source: str  # a file (SQLite) or a database's name (PostgreSQL)
    cookie: str


_templates: dict[str, _Template] = {}
_template_dir: list[Path] = []


def _save_template(kind: str, url: str) -> str:
    if kind == "sqlite":
        if not _template_dir:
            _template_dir.append(Path(tempfile.mkdtemp(prefix="liveoffers-templates-")))
            atexit.register(shutil.rmtree, _template_dir[0], ignore_errors=True)
        saved = _template_dir[0] / f"{len(_templates)}.sqlite3"
        shutil.copyfile(url.removeprefix("sqlite:///"), saved)
        return str(saved)
    server, _, name = url.rpartition("/")
    copy = f"liveoffers_template_{uuid.uuid4().hex[:8]}"
    _psql(server, f"CREATE DATABASE {copy} TEMPLATE {name}")
    atexit.register(_psql, server, f"DROP DATABASE IF EXISTS {copy} WITH (FORCE)", check=False)
    return copy


def _copy_template(kind: str, source: str, url: str) -> None:
    if kind == "sqlite":
        target = Path(url.removeprefix("sqlite:///"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return
    server, _, name = url.rpartition("/")
    _psql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _psql(server, f"CREATE DATABASE {name} TEMPLATE {source}")


def _psql(server: str, command: str, *, check: bool = True) -> None:
    subprocess.run(
        ["psql", f"{server}/postgres", "-Xq", "-c", command],
        check=check,
        capture_output=True,
        timeout=60,
    )
