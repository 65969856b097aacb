"""The clickstream at rest: every applied event, written through to daily files.

The collector hands each frame's fresh events to `EventLog.append`, which encodes them into a
buffer (nothing on the socket path waits on a disk). About once a second the buffers are taken
and, in a thread beside the event loop, appended as JSON lines to
`DIR/YYYY-MM-DD/<host>-<pid>.jsonl` (the day of the server's receive time, UTC); once a day is
over, `compress_days` gzips its files (`.jsonl.gz`), so the CPU compression takes is spent
once a day rather than on every flush of a busy server. Each
process writes its own files, so any number of servers share a directory (a shared volume) or
keep their own. `prune` deletes days older than the retention; `forget_session` rewrites the
files without one session's lines.

A line is a frame's events: `{"at": receive time, "session": id, "site": key, "events": [...]}`,
each event as validated (its id, name, client time and props). Never a token or an address.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import gzip
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from streaming.protocol import Event, ProtocolError, decode_events

SUFFIX: Final = ".jsonl"
COMPRESSED: Final = ".jsonl.gz"
DAY_SECONDS: Final = 86400.0
_encoder: Final = msgspec.json.Encoder()


class LogRecord(msgspec.Struct, gc=False):
    """A line as written: a frame's events as validated, with when and whose."""

    at: float
    session: str
    site: str
    events: Sequence[Event]


class LogLine(msgspec.Struct, gc=False):
    at: float
    session: str
    site: str
    events: list[msgspec.Raw]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    at: float  # the server's receive time
    session: str
    site: str
    event: Event


@dataclass(frozen=True, slots=True)
class Pending:
    """Lines taken from an `EventLog`, by day, and how many events they hold."""

    lines: dict[str, bytearray]
    events: int


def day_of(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


class EventLog:
    """Applied events on their way to the day's file of this process.

    `append` encodes each frame's line at once into the day's buffer (a bytearray): nothing is
    kept per frame but its bytes, so a second's frames make no objects for the garbage
    collector to walk. `take` swaps the buffers out (on the thread that appends) and `write`
    puts them in the files (another thread may); `flush` does both.
    """

    def __init__(self, directory: str | Path, *, days: int, name: str | None = None) -> None:
        self.directory = Path(directory)
        self.days = days
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.written = 0
        self._buffers: dict[str, bytearray] = {}
        self._events = 0  # in the buffers
        self._frames = 0
        # the day of the last frame, the second it ends and its buffer
        self._day_ends = 0.0
        self._buffer = bytearray()

    def append(self, session_id: str, site: str, at: float, events: Sequence[Event]) -> None:
        """Called on the event loop for each frame's fresh events: encodes them into a buffer."""
        if not events:
            return
        if not self._day_ends - DAY_SECONDS <= at < self._day_ends:
            self._day_ends = (at // DAY_SECONDS + 1) * DAY_SECONDS
            self._buffer = self._buffers.setdefault(day_of(at), bytearray())
        buffer = self._buffer
        _encoder.encode_into(LogRecord(at, session_id, site, events), buffer, -1)
        buffer += b"\n"
        self._events += len(events)
        self._frames += 1

    def waiting(self) -> int:
        """Frames appended and not yet taken."""
        return self._frames

    def take(self) -> Pending:
        """What was appended since the last take, for `write`; call it where `append` runs."""
        pending = Pending(self._buffers, self._events)
        self._buffers, self._events, self._frames = {}, 0, 0
        self._day_ends, self._buffer = 0.0, bytearray()
        return pending

    def write(self, pending: Pending) -> int:
        """Append taken lines to their days' files (a thread's work). Returns events written."""
        for day, text in pending.lines.items():
            path = self.directory / day / f"{self.name}{SUFFIX}"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as file:
                fcntl.flock(file, fcntl.LOCK_EX)  # `forget_session` may be rewriting it
                file.write(text)
                file.flush()
        self.written += pending.events
        return pending.events

    def flush(self) -> int:
        """Take and write what is queued. Returns events written."""
        return self.write(self.take())

    def prune(self, now: float) -> int:
        """Delete the days past the retention; returns how many went."""
        return prune(self.directory, days=self.days, now=now)

    def compress_days(self, now: float) -> int:
        """Gzip this process's files of the days before today; returns how many."""
        return compress_days(self.directory, before=day_of(now), name=self.name)


def compress_days(directory: Path, *, before: str, name: str = "*") -> int:
    done = 0
    for day in _days(directory):
        if day.name >= before:
            continue
        for path in sorted(day.glob(f"{name}{SUFFIX}")):
            target = path.with_name(path.name.removesuffix(SUFFIX) + COMPRESSED)
            with path.open("rb") as source:
                fcntl.flock(source, fcntl.LOCK_EX)
                data = source.read()
                with target.open("ab") as out:  # a member more, if compressed before
                    out.write(gzip.compress(data, compresslevel=6))
                    out.flush()
                    os.fsync(out.fileno())
                path.unlink()
            done += 1
    return done


def prune(directory: Path, *, days: int, now: float) -> int:
    oldest = day_of(now - days * 86400)
    gone = 0
    for day in _days(directory):
        if day.name < oldest:
            shutil.rmtree(day, ignore_errors=True)
            gone += 1
    return gone


def _days(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.is_dir() and _is_day(path.name))


def _is_day(name: str) -> bool:
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


def log_files(
    directory: str | Path, *, since: float | None = None, until: float | None = None
) -> list[Path]:
    """The files of the days from `since` to `until` (receive times; both optional)."""
    first = day_of(since) if since is not None else ""
    last = day_of(until) if until is not None else "9999"
    return [
        path
        for day in _days(Path(directory))
        if first <= day.name <= last
        for path in sorted([*day.glob(f"*{COMPRESSED}"), *day.glob(f"*{SUFFIX}")])
    ]


def _open(path: Path, file: Any) -> Any:
    return gzip.open(file, "rb") if path.name.endswith(COMPRESSED) else file


def read_lines(path: Path) -> Iterator[LogLine]:
    decoder = msgspec.json.Decoder(LogLine)
    with path.open("rb") as raw:
        for line in _open(path, raw):
            if line.strip():
                yield decoder.decode(line)


def read_log(
    directory: str | Path, *, since: float | None = None, until: float | None = None
) -> Iterator[LoggedEvent]:
    """Every logged event from `since` to `until`, each file in order (files are per process:
    merge by `at` when the order across them matters). Validated again on the way in."""
    for path in log_files(directory, since=since, until=until):
        for line in read_lines(path):
            if (since is not None and line.at < since) or (until is not None and line.at >= until):
                continue
            for item in decode_events(line.events):
                if isinstance(item, ProtocolError):
                    continue  # written by a version whose protocol allowed it
                yield LoggedEvent(line.at, line.session, line.site, item)


def forget_session(directory: str | Path, session_id: str) -> int:
    """Rewrite every file without the session's lines; returns how many events went (a line
    is a frame's events)."""
    removed = 0
    for path in log_files(directory):
        with path.open("r+b") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            kept: list[bytes] = []
            dropped = 0
            for line in _open(path, file):
                session, events = _session_of(line)
                if session == session_id:
                    dropped += events
                else:
                    kept.append(line)
            if dropped:
                text = b"".join(kept)
                file.seek(0)
                file.truncate()
                file.write(gzip.compress(text) if path.name.endswith(COMPRESSED) else text)
                file.flush()
                os.fsync(file.fileno())
                removed += dropped
    return removed


class _SessionOnly(msgspec.Struct):
    session: str
    events: list[msgspec.Raw] = []


_session_decoder: Final = msgspec.json.Decoder(_SessionOnly)


def _session_of(line: bytes) -> tuple[str | None, int]:
    """A line's session and how many events it holds (None, 0: not a line of the log)."""
    try:
        read = _session_decoder.decode(line)
    except msgspec.DecodeError:
        return None, 0
    return read.session, len(read.events)


def sessions_of(events: Iterable[LoggedEvent]) -> dict[str, list[LoggedEvent]]:
    """Events grouped by session, each session's in order of receive time."""
    grouped: dict[str, list[LoggedEvent]] = {}
    for logged in events:
        grouped.setdefault(logged.session, []).append(logged)
    for logged_events in grouped.values():
        logged_events.sort(key=lambda logged: logged.at)
    return grouped
