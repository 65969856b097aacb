"""The record on its way to the database: written here before anyone is told.

An offer's decision is appended before its frame is sent, a shopper's mark or purchase before
its event is acknowledged; the recorder takes entries in order, writes them to the database in
bulk, and only then says they are `done`. Whatever fails in between (the database away, the
process killed), what was appended is still here and is written later.

- `FileJournal`, embedded mode: an append-only file of length-prefixed msgpack records and a
  checkpoint file (the offset up to which everything is in the database). A process killed and
  started again replays what is past the checkpoint. Without a path it lives in memory only.
- `RedisJournal`, Redis mode: a Redis stream read by the consumer group `recorders`, so any
  process may write what any other appended; entries a killed recorder held are taken over
  after `claim_idle` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from redis.exceptions import ResponseError

from streaming.records import ReasonsMade, Record, RecordError, decode, encode
from streaming.redis_client import Client, Shards

log = logging.getLogger(__name__)

_LENGTH: Final = 4  # bytes of the little-endian length before each record in a file
# A file journal whose records are all written starts again from empty past this size.
ROTATE_BYTES: Final = 8 * 1024 * 1024


@dataclass(slots=True)
class Entry:
    """A journal entry: its id in the journal, and the record (None when it could not be read,
    with the bytes and what was wrong, to be set aside)."""

    id: Any
    record: Record | None
    raw: bytes = b""
    error: str = ""
    stream: str = ""  # Redis mode: the stream it is in


class Journal(ABC):
    @abstractmethod
    async def append(self, records: Sequence[Record]) -> None:
        """Add records, kept when this returns whatever becomes of this process."""

    @abstractmethod
    async def take(self, limit: int) -> list[Entry]:
        """Up to `limit` entries not yet done, oldest first; the same again until `done`."""

    @abstractmethod
    async def done(self, entries: Sequence[Entry]) -> None:
        """These entries are in the database (or set aside): never handed out again."""

    @abstractmethod
    def waiting(self) -> int:
        """About how many entries wait to be written (may be a moment stale)."""

    async def refresh(self) -> None:  # noqa: B027
        """Refresh what `waiting` answers, where it is cached."""

    def close(self) -> None:  # noqa: B027
        """Let go of what the journal holds open."""

    async def aclose(self) -> None:
        self.close()


class FileJournal(Journal):
    """Embedded mode's journal: a file (or, without a path, memory) in this one process."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self._entries: deque[Entry] = deque()
        self._taken = 0
        self._fd: int | None = None
        self._lock: int | None = None
        self._offset = 0
        self._synced = 0
        if directory is None:
            return
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise RuntimeError(
                f"the record journal {self.directory} is in use by another process: give each "
                "embedded server a RECORD_JOURNAL of its own"
            ) from None
        self._path = self.directory / "records"
        self._checkpoint = self.directory / "checkpoint"
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._replay()

    def _replay(self) -> None:
        """Hand out again what a previous process appended and did not see written."""
        entries, end = _read(self._path, self._checkpoint)
        if end < os.fstat(self._fd or 0).st_size:
            # A record cut short by a crash mid-write: never acknowledged, so dropped.
            os.ftruncate(self._fd or 0, end)
        self._entries.extend(entries)
        self._offset = end
        if entries:
            log.warning(
                "record journal %s: %d records to write from before a restart",
                self.directory,
                len(entries),
            )

    def _write_checkpoint(self, offset: int) -> None:
        temporary = self._checkpoint.with_suffix(".tmp")
        temporary.write_text(str(offset))
        os.replace(temporary, self._checkpoint)

    async def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self._fd is None:
            self._entries.extend(Entry(None, record) for record in records)
            return
        chunks = []
        ends = []
        offset = self._offset
        for record in records:
            raw = encode(record)
            chunks.append(len(raw).to_bytes(_LENGTH, "little"))
            chunks.append(raw)
            offset += _LENGTH + len(raw)
            ends.append(offset)
        data = b"".join(chunks)
        written = os.write(self._fd, data)
        while written < len(data):
            written += os.write(self._fd, data[written:])
        self._offset = offset
        self._entries.extend(Entry(end, record) for end, record in zip(ends, records, strict=True))

    async def take(self, limit: int) -> list[Entry]:
        # Entries are done in order, by the one recorder of this process.
        return [self._entries[i] for i in range(min(limit, len(self._entries)))]

    async def done(self, entries: Sequence[Entry]) -> None:
        last = None
        for entry in entries:
            head = self._entries.popleft()
            assert head is entry, "journal entries are done in the order taken"
            last = entry.id
        if self._fd is None or last is None:
            return
        if not self._entries and self._offset >= ROTATE_BYTES:
            # Everything is written: start the file again from empty.
            os.ftruncate(self._fd, 0)
            self._offset = 0
            self._write_checkpoint(0)
        else:
            self._write_checkpoint(int(last))

    def waiting(self) -> int:
        return len(self._entries)

    async def refresh(self) -> None:
        """Once a second (the recorder's refresh): what was appended since goes to the disk, so
        that a machine that loses power loses at most the last second. A killed process loses
        nothing appended: the kernel holds it."""
        if self._fd is not None and self._offset != self._synced:
            self._synced = self._offset
            await asyncio.to_thread(os.fsync, self._fd)

    def close(self) -> None:
        for fd in (self._fd, self._lock):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock = None


def _read(path: Path, checkpoint: Path) -> tuple[list[Entry], int]:
    """The entries of a journal file past its checkpoint, and where the last whole one ends."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    try:
        offset = int(checkpoint.read_text() or 0)
    except (FileNotFoundError, ValueError):
        offset = 0
    if offset > len(data):
        offset = 0  # the file was started again after everything in it was written
    entries = []
    while offset + _LENGTH <= len(data):
        end = offset + _LENGTH + int.from_bytes(data[offset : offset + _LENGTH], "little")
        if end > len(data):
            break
        raw = data[offset + _LENGTH : end]
        try:
            entries.append(Entry(end, decode(raw)))
        except RecordError as exc:
            entries.append(Entry(end, None, raw, str(exc)))
        offset = end
    return entries, offset


def read_directory(directory: Path | str) -> list[Entry]:
    """What a file journal holds that is not yet written (for `reconcile`; read only)."""
    path = Path(directory)
    return _read(path / "records", path / "checkpoint")[0]


RECORDERS: Final = "recorders"


class RedisJournal(Journal):
    """Redis mode's journal: a record stream a shard (`lo:{n}:records`, streaming/redis_client.py),
    read by the group `recorders`.

    A session's records go into its shard's stream, in order, its decisions in the same script
    as their pauses (`settle.lua`). Each process reads every stream with a consumer name of its
    own; an entry is acknowledged and deleted once written, so the streams hold only what waits.
    Entries a consumer took and never acknowledged (it was killed) go to another after
    `claim_idle` seconds.
    """

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "lo:",
        consumer: str | None = None,
        claim_idle: float = 1.5,
    ) -> None:
        self.redis = client
        self.shards = Shards.of_client(client, prefix)
        self.streams = [self.shards.records(shard) for shard in self.shards]
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.claim_idle_ms = max(1, round(claim_idle * 1000))
        self._groups_ready = False
        self._waiting = 0
        self._next_claim = 0.0

    def stream_of(self, record: Record) -> str:
        """The stream of the record's session (reasons follow their decision's)."""
        if isinstance(record, ReasonsMade):
            session_id = record.pause_key.rpartition(":")[0]
        else:
            session_id = record.session_id
        return self.shards.records_of(session_id)

    async def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.xadd(self.stream_of(record), {"r": encode(record)})
            await pipe.execute()

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, RECORDERS, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def take(self, limit: int) -> list[Entry]:
        await self._ensure_groups()
        try:
            # What this process took and could not write yet, first; then what a recorder that
            # died held; then what is new.
            entries = await self._read("0", limit)
            if not entries and time.monotonic() >= self._next_claim:
                self._next_claim = time.monotonic() + 0.5
                entries = await self._claim_abandoned(limit)
            if not entries:
                entries = await self._read(">", limit)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis lost a group (restarted without its data)
                self._groups_ready = False
                return []
            raise
        return entries

    async def _read(self, since: str, limit: int) -> list[Entry]:
        # Each stream gives its share: a take returns at most `limit` + streams - 1 entries.
        share = -(-limit // len(self.streams))
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xreadgroup(RECORDERS, self.consumer, {stream: since}, count=share)
            replies: list[Any] = await pipe.execute()
        entries: list[Entry] = []
        for stream, reply in zip(self.streams, replies, strict=True):
            for _, messages in reply or ():
                entries += [_entry(i, fields, stream) for i, fields in messages if fields]
        return entries

    async def _claim_abandoned(self, limit: int) -> list[Entry]:
        share = -(-limit // len(self.streams))
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xautoclaim(
                    stream, RECORDERS, self.consumer, self.claim_idle_ms, "0-0", count=share
                )
            replies: list[Any] = await pipe.execute()
        entries: list[Entry] = []
        for stream, reply in zip(self.streams, replies, strict=True):
            entries += [_entry(i, fields, stream) for i, fields in reply[1] if fields]
        return entries

    async def done(self, entries: Sequence[Entry]) -> None:
        by_stream: dict[str, list[Any]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        await asyncio.gather(*(self._done(stream, ids) for stream, ids in by_stream.items()))

    async def _done(self, stream: str, ids: list[Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, RECORDERS, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()

    def waiting(self) -> int:
        return self._waiting

    async def refresh(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xlen(stream)
            self._waiting = sum(int(n) for n in await pipe.execute())


def _entry(entry_id: bytes, fields: dict[bytes, bytes], stream: str) -> Entry:
    raw = fields.get(b"r", b"")
    try:
        return Entry(entry_id, decode(raw), stream=stream)
    except RecordError as exc:
        return Entry(entry_id, None, raw, str(exc), stream)
