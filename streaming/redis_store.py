"""Redis mode: session state and pause timers shared by every server and stream worker.

Layout (prefix `lo:`):

- `lo:s:{sid}`, one string a session: its state as one msgpack map, read and written whole by
  each script. The `SessionState` fields go under short names (`_FIELD_TYPES`), absent when 0,
  False, None or -1 (`dq`), which keeps new sessions small; `c` maps each cart line's product
  to [quantity, unit price] and `nc` counts them; `p` holds the distinct products as 4-byte
  CRC32s; `e` the last 96 event ids as 8-byte BLAKE2b digests (`en`: the next slot to
  overwrite); `lq` and `lw` the activity_seq of a pause being decided and the worker holding
  its lease, `rs` a decided pause whose offer is yet to be sent. One value, not a hash of
  fields: a frame costs Redis one GET and one SET whatever it changes.
- `lo:o:{sid}`, the live offer's frame (a few hundred bytes, read only when a page connects).
- `lo:pauses`, sorted set session -> pause deadline: sessions that can pause.
- `lo:leases`, sorted set session -> lease expiry: pauses being decided.
- `lo:records`, the record stream (streaming/journal.py): each decision goes in with its pause
  (`settle.lua`), marks and purchases before their ack; `lo:budget:{day}`, each rule's offers
  and holdouts of a UTC day (streaming/budget.py).
- `lo:live` and `lo:carts`, sorted sets session -> last seen: for the live-session and
  open-cart counts, trimmed by score.

A session's keys expire after `idle_seconds` without an event (the TTL is refreshed by each call
of `apply` and `open`), which is the 30-minute eviction; the TTL runs on the Redis server's
clock, while everything else uses the caller's `now`. Each call is one Lua script, so one round
trip and atomic: servers and workers may die at any moment and what Redis confirmed stays
whole. On one Redis every key is as above. On a Redis Cluster (streaming/redis_client.py's
`Shards`) each session belongs to one of a fixed number of shards by the CRC32 of its id, and
every key of a shard starts with its hash tag (`lo:{3}:s:{sid}`, `lo:{3}:pauses`, ...): a
script's keys are always one shard's, so it runs whole on one master.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
import zlib
from collections import Counter
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, Final

import msgpack
from redis.commands.core import AsyncScript

from streaming import lua
from streaming.journal import Journal, RedisJournal
from streaming.protocol import MAX_QUANTITY, Event, ProtocolError
from streaming.records import encode
from streaming.redis_client import Client, ScriptCall, Shards, connect, run_script
from streaming.state import (
    _ID_BYTES,
    _PRODUCT_BYTES,
    MAX_CART_LINES,
    MAX_DISTINCT_PRODUCTS,
    RECENT_IDS,
    SessionState,
)
from streaming.store import Applied, OfferNote, SessionStore, Settled, has_offer_events

CART_FULL: Final = f"the cart already holds {MAX_CART_LINES} different products"
# Pauses claimed by one script: a script blocks Redis while it runs (about 10 us a pause), so a
# burst of due pauses is claimed in several short scripts rather than one long one.
CLAIM_CHUNK: Final = 500

# Fields of the session hash; absent means 0, False, None or -1 (`dq`), which keeps new sessions
# small.
_FIELD_TYPES: Final[dict[bytes, tuple[str, type]]] = {
    b"t0": ("started_at", float),
    b"tl": ("last_seen", float),
    b"ta": ("last_activity", float),
    b"tc": ("last_add_at", float),
    b"pv": ("page_views", int),
    b"vv": ("product_views", int),
    b"sr": ("searches", int),
    b"ad": ("adds", int),
    b"rm": ("removes", int),
    b"vs": ("views_since_add", int),
    b"hd": ("hidden", bool),
    b"co": ("checkout_started", bool),
    b"pu": ("purchased", bool),
    b"os": ("offers_shown", int),
    b"oa": ("offers_accepted", int),
    b"od": ("offers_dismissed", int),
    b"sq": ("activity_seq", int),
    b"dq": ("decided_seq", int),
    b"to": ("last_offer_at", float),
    b"ox": ("offer_expires_at", float),
}

# The scripts, one file each in streaming/lua/ (helpers.lua is prepended to those that need it).
# The state's bounds, filled into the apply script's dollar names.
APPLY_BOUNDS: Final = {
    "recent": RECENT_IDS,
    "id_bytes": _ID_BYTES,
    "products": MAX_DISTINCT_PRODUCTS,
    "product_bytes": _PRODUCT_BYTES,
    "cart_lines": MAX_CART_LINES,
    "max_quantity": MAX_QUANTITY,
}
_APPLY_LUA: Final = lua.script("apply", helpers=True, **APPLY_BOUNDS)
_CLAIM_LUA: Final = lua.script("claim", helpers=True)
_SETTLE_LUA: Final = lua.script("settle", helpers=True)
_RELEASE_LUA: Final = lua.script("release", helpers=True)
_NOTE_OFFER_LUA: Final = lua.script("note_offer", helpers=True)


def id_digest(event_id: str) -> bytes:
    """The event id as the ring remembers it: the same in every process (unlike `hash`)."""
    return hashlib.blake2b(event_id.encode(), digest_size=_ID_BYTES).digest()


def product_digest(product_id: str) -> bytes:
    """The same 4-byte key as `SessionState`, so `distinct_products` reads the same."""
    return zlib.crc32(product_id.encode()).to_bytes(_PRODUCT_BYTES, "little")


def _event_args(event: Event) -> tuple[str | bytes, ...]:
    """The 7 script arguments of one event (see `_APPLY_LUA`)."""
    activity = "1" if event.activity else "0"
    return (event.name, activity, id_digest(event.id), *_props_args(event))


def _props_args(event: Event) -> tuple[str, str, str, bytes]:
    # (product id / offer id / visibility state, price, quantity, product digest)
    props: Any = event.props
    name = event.name
    if name == "add_to_cart":
        product = props.product_id
        return product, repr(props.price), str(props.quantity), product_digest(product)
    if name == "product_view":
        return "", "", "", product_digest(props.product_id)
    if name == "remove_from_cart":
        quantity = "" if props.quantity is None else str(props.quantity)
        return props.product_id, "", quantity, b""
    if name == "visibility":
        return props.state, "", "", b""
    if name.startswith("offer_"):
        return props.offer_id, "", "", b""
    return "", "", "", b""


def state_from_snapshot(session_id: str, packed: bytes, frame: bytes | None = None) -> SessionState:
    """A `SessionState` from the session's packed state (and the live offer's frame).

    De-duplication happens in Redis: the ring of recent ids is not read. A pause that a worker
    holds under a lease reads as decided, as `MemoryStore.claim_due` leaves it.
    """
    fields: dict[bytes, Any] = msgpack.unpackb(packed, raw=True)
    values: dict[str, Any] = {}
    for name, value in fields.items():
        known = _FIELD_TYPES.get(name)
        if known is not None:
            attr, kind = known
            values[attr] = kind(value)
    leased = fields.get(b"lq")
    if leased is not None and leased == values.get("activity_seq", 0):
        values["decided_seq"] = leased
    offer_id = fields.get(b"oi")
    state = SessionState(
        session_id,
        fields.get(b"st", b"").decode(),
        started_at=values.pop("started_at", 0.0),
        last_seen=values.pop("last_seen", 0.0),
        last_activity=values.pop("last_activity", 0.0),
    )
    for attr, value in values.items():
        setattr(state, attr, value)
    state.offer_frame = frame.decode() if frame else None
    state.offer_id = None if offer_id is None else offer_id.decode()
    cart = fields.get(b"c") or {}
    state.restore_cart({product.decode(): (q, float(p)) for product, (q, p) in cart.items()})
    state.restore_products([fields.get(b"p", b"")])
    return state


ScriptArgs = Sequence[str | bytes]


class Coalescer:
    """Calls one script with one request in flight: calls made meanwhile go out as one pipeline.

    A server applies the frames of many sockets at once; a pipeline costs the client far less
    than a request a call, and Redis too: most of what a lone single-event call costs Redis is
    reading and answering its request. A call waits only for the end of the event loop's
    current pass, so that the frames of every socket read in that pass go out together. Each
    call is still its own atomic script, sent in the order made, and each caller gets its own
    reply (or exception) only once Redis has answered.
    """

    def __init__(self, client: Client, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._busy = False
        self._pending: list[tuple[ScriptArgs, ScriptArgs, asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: ScriptArgs, args: ScriptArgs) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._next)
        return await future

    def _next(self) -> None:
        """Send the calls that waited, if any."""
        if not self._pending:
            self._busy = False
            return
        flush = asyncio.create_task(self._flush())
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        calls, self._pending = self._pending, []
        futures = [future for _, _, future in calls]
        try:
            replies = await self._send([(keys, args) for keys, args, _ in calls])
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:
            replies = [exc] * len(calls)
        finally:
            self._next()
        for future, reply in zip(futures, replies, strict=True):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _send(self, calls: list[ScriptCall]) -> list[Any]:
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self._script(keys=keys, args=args)]
        return await run_script(self._client, self._script, calls, raise_on_error=False)


def _num(value: float) -> str:
    # repr is the shortest text that reads back as the same float, in Lua and in Python.
    return repr(float(value))


class RedisStore(SessionStore):
    """Session state and pause timers in Redis, shared by any number of processes.

    Exactly once: `claim_due` hands a pause to one worker under a lease of `lease_seconds`;
    the worker stores its decision with `settle`, which, in one script, puts it in the record
    stream and ends the pause. A worker that dies before that loses its lease, and another
    worker claims the same pause (same `pause_key`) and decides it: nothing of the first was
    stored or sent. A worker whose lease expired meanwhile stores nothing and sends nothing.

    `__len__`, `open_carts` and `next_deadline` are sync in the interface: they answer from
    values cached by `refresh_counts` (call it about once a second) and `claim_due`.
    """

    def __init__(
        self,
        client: Client | str,
        *,
        idle_seconds: float = 1800.0,
        pause_seconds: float = 30.0,
        lease_seconds: float = 5.0,
        prefix: str = "lo:",
    ) -> None:
        if isinstance(client, str):
            client = connect(client)
            self._owns_client = True
        else:
            self._owns_client = False
        if client.get_encoder().decode_responses:
            raise ValueError("RedisStore needs a client with decode_responses=False")
        self.redis = client
        self.idle_seconds = idle_seconds
        self.pause_seconds = pause_seconds
        self.lease_seconds = lease_seconds
        self.prefix = prefix
        self.shards = Shards.of_client(client, prefix)
        # The holder of this store's leases: only it may store the decisions of its pauses.
        self.worker_id = uuid.uuid4().hex
        self._idle_ms = str(max(1, round(idle_seconds * 1000)))
        self._apply = Coalescer(client, client.register_script(_APPLY_LUA))
        self._claim = client.register_script(_CLAIM_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._note_offer = client.register_script(_NOTE_OFFER_LUA)
        self._live_count = 0
        self._open_carts = 0
        self._live_counts = (0, 0)
        # the earliest pause deadline or lease expiry of each shard, as of its last claim
        self._deadlines: dict[int, float | None] = {}

    async def aclose(self) -> None:
        """Close the client when this store made it from a URL."""
        if self._owns_client:
            await self.redis.aclose()

    def session_key(self, session_id: str) -> str:
        return self.shards.session(session_id)

    def offer_key(self, session_id: str) -> str:
        return self.shards.offer(session_id)

    # --- events -----------------------------------------------------------------------------
    async def open(self, *, session_id: str, site: str, now: float) -> SessionState:
        _, packed, frame = await self._run_apply(session_id, site, now, (), want_state=True)
        return state_from_snapshot(session_id, packed, frame)

    async def apply(
        self, *, session_id: str, site: str, events: Sequence[Event], now: float
    ) -> Applied:
        if not has_offer_events(events):
            status = await self._run_apply(session_id, site, now, events, want_state=False)
            return _applied(events, status)
        # Offer events count only for the session's own offer: read its id in the same call.
        status, packed, _ = await self._run_apply(session_id, site, now, events, want_state=True)
        applied = _applied(events, status)
        applied.offer_id = _offer_id_of(packed)
        return applied

    async def _run_apply(
        self,
        session_id: str,
        site: str,
        now: float,
        events: Sequence[Event],
        *,
        want_state: bool,
    ) -> Any:
        args: list[str | bytes] = [
            session_id,
            site,
            _num(now),
            self._idle_ms,
            _num(self.pause_seconds),
            "1" if want_state else "0",
        ]
        for event in events:
            args.extend(_event_args(event))
        shards = self.shards
        shard = shards.shard_of(session_id)
        keys = [
            shards.session(session_id),
            shards.offer(session_id),
            shards.pauses(shard),
            shards.live(shard),
            shards.carts(shard),
        ]
        return await self._apply(keys=keys, args=args)

    async def get(self, session_id: str) -> SessionState | None:
        packed, frame = await self.redis.mget(
            self.session_key(session_id), self.offer_key(session_id)
        )
        if not isinstance(packed, bytes):
            return None
        return state_from_snapshot(session_id, packed, frame if isinstance(frame, bytes) else None)

    # --- decisions --------------------------------------------------------------------------
    async def claim_due(self, now: float, limit: int) -> list[SessionState]:
        """Due pauses, at most `limit`, earliest deadline first.

        On a cluster, each shard's due pauses are looked at first (one pipeline), and each shard
        is asked for its share of the `limit` earliest; the claims go out in one pipeline too.
        A shard claims at most `CLAIM_CHUNK` a script, so a burst is claimed in short scripts.
        """
        wanted = {0: limit} if self.shards.count == 1 else await self._due_on_shards(now, limit)
        states: list[SessionState] = []
        while wanted:
            asked = {shard: min(CLAIM_CHUNK, count) for shard, count in wanted.items()}
            replies = await self._claim_from(asked, now)
            more: dict[int, int] = {}
            for (shard, count), reply in zip(asked.items(), replies, strict=True):
                claimed, first_pause, first_lease = reply
                deadlines = [float(d) for d in (first_pause, first_lease) if d]
                self._deadlines[shard] = min(deadlines) if deadlines else None
                states += [
                    state_from_snapshot(claimed[i].decode(), claimed[i + 1])
                    for i in range(0, len(claimed), 2)
                ]
                if len(claimed) // 2 == count < wanted[shard]:
                    more[shard] = wanted[shard] - count
            wanted = more
        if self.shards.count > 1:
            states.sort(key=attrgetter("last_activity"))
        # A pause re-claimed from a worker that died after making its offer needs that offer's
        # frame (kept under its own key) to record and send it again; such pauses are rare.
        offered = [state for state in states if state.offer_id is not None]
        if offered:
            # one pipeline (MGET would span shards on a cluster)
            async with self.redis.pipeline(transaction=False) as pipe:
                for state in offered:
                    pipe.get(self.offer_key(state.session_id))
                frames = await pipe.execute()
            for state, frame in zip(offered, frames, strict=True):
                state.offer_frame = frame.decode() if isinstance(frame, bytes) else frame
        return states

    async def _due_on_shards(self, now: float, limit: int) -> dict[int, int]:
        """How many of the `limit` earliest due pauses (and expired leases) each shard holds;
        shards with none due note their next deadline."""
        keys, due = self.shards, _num(now)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in keys:
                for key in (keys.pauses(shard), keys.leases(shard)):
                    pipe.zrange(
                        key, "-inf", due, byscore=True, offset=0, num=limit, withscores=True
                    )
                    pipe.zrange(key, 0, 0, withscores=True)
            replies: list[Any] = await pipe.execute()
        earliest: list[tuple[float, int]] = []
        for shard in keys:
            pauses, first_pause, leases, first_lease = replies[shard * 4 : shard * 4 + 4]
            earliest += [(score, shard) for _, score in (*pauses, *leases)]
            firsts = [score for _, score in (*first_pause, *first_lease)]
            self._deadlines[shard] = min(firsts) if firsts else None
        earliest.sort()
        return dict(Counter(shard for _, shard in earliest[:limit]))

    async def _claim_from(self, asked: dict[int, int], now: float) -> list[Any]:
        keys = self.shards
        calls: list[ScriptCall] = [
            (
                [keys.pauses(shard), keys.leases(shard)],
                [
                    _num(now),
                    count,
                    _num(now + self.lease_seconds),
                    f"{keys.tag(shard)}s:",
                    self.worker_id,
                ],
            )
            for shard, count in asked.items()
        ]
        if len(calls) == 1:
            return [await self._claim(keys=calls[0][0], args=calls[0][1])]
        return await run_script(self.redis, self._claim, calls)

    async def settle(self, settled: Sequence[Settled], journal: Journal) -> list[bool]:
        """Each decision stored with its pause in one script (`settle.lua`), all in one pipeline:
        into the journal's stream, noted on its session, the pause decided and its lease given
        back, only while the lease is still this store's."""
        if not isinstance(journal, RedisJournal):
            return await super().settle(settled, journal)
        if not settled:
            return []
        if journal.shards != self.shards:
            raise ValueError("the journal's streams are not this store's shards'")
        keys = self.shards
        calls: list[ScriptCall] = []
        for item in settled:
            note = item.note
            offer = note if note is not None and note.frame is not None else None
            session_id = item.decision.session_id
            shard = keys.shard_of(session_id)
            calls.append(
                (
                    [
                        keys.session(session_id),
                        keys.offer(session_id),
                        keys.pauses(shard),
                        keys.leases(shard),
                        keys.records(shard),
                    ],
                    [
                        session_id,
                        str(item.seq),
                        self.worker_id,
                        encode(item.decision),
                        "" if note is None else _num(note.at),
                        "" if offer is None else (offer.offer_id or ""),
                        "" if offer is None else (offer.frame or ""),
                        "" if offer is None else _num(offer.expires_at),
                        "1" if item.sends else "",
                    ],
                )
            )
        replies = await run_script(self.redis, self._settle, calls)
        return [reply == 1 for reply in replies]

    async def release(self, sent: Sequence[Settled]) -> None:
        """The pauses whose offers went out: their leases given back (one pipeline). A worker
        that dies before this leaves them to run out, and the next holder sends them again."""
        if not sent:
            return
        keys = self.shards
        calls: list[ScriptCall] = [
            (
                [
                    keys.session(item.decision.session_id),
                    keys.leases(keys.shard_of(item.decision.session_id)),
                ],
                [item.decision.session_id, str(item.seq), self.worker_id],
            )
            for item in sent
        ]
        await run_script(self.redis, self._release, calls)

    async def note_offer(
        self,
        session_id: str,
        *,
        at: float,
        offer_id: str | None = None,
        frame: str | None = None,
        expires_at: float = 0.0,
    ) -> None:
        await self.note_offers([OfferNote(session_id, at, offer_id, frame, expires_at)])

    async def note_offers(self, notes: Sequence[OfferNote]) -> None:
        """One script a note, all in one pipeline: a batch of offers costs one round trip."""
        if not notes:
            return
        calls: list[ScriptCall] = []
        for note in notes:
            with_frame = note.frame is not None
            calls.append(
                (
                    [self.session_key(note.session_id), self.offer_key(note.session_id)],
                    [
                        _num(note.at),
                        (note.offer_id or "") if with_frame else "",
                        note.frame or "",
                        _num(note.expires_at) if with_frame else "",
                    ],
                )
            )
        await run_script(self.redis, self._note_offer, calls)

    def next_deadline(self) -> float | None:
        """The earliest pause deadline or lease expiry seen by the last claims (may be stale)."""
        known = [deadline for deadline in self._deadlines.values() if deadline is not None]
        return min(known) if known else None

    # --- counts -----------------------------------------------------------------------------
    async def refresh_counts(self, now: float) -> None:
        """Count sessions and open carts seen within `idle_seconds` (the sync calls) and within
        `live_seconds` (`live_counts`)."""
        held = f"({_num(now - self.idle_seconds)}"
        live = f"({_num(now - self.live_seconds)}"
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                for key, since in (
                    (self.shards.live(shard), held),
                    (self.shards.carts(shard), held),
                    (self.shards.live(shard), live),
                    (self.shards.carts(shard), live),
                ):
                    pipe.zcount(key, since, "+inf")
            counts = [int(n) for n in await pipe.execute()]
        sessions, carts, live_sessions, live_carts = (sum(counts[i::4]) for i in range(4))
        self._live_count, self._open_carts = sessions, carts
        self._live_counts = (live_sessions, live_carts)

    def live_counts(self) -> tuple[int, int]:
        return self._live_counts

    async def evict_idle(self, now: float) -> int:
        """Sessions expire by TTL; this only trims the count sets. Returns how many went."""
        upto = _num(now - self.idle_seconds)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.shards:
                pipe.zremrangebyscore(self.shards.live(shard), "-inf", upto)
                pipe.zremrangebyscore(self.shards.carts(shard), "-inf", upto)
            gone = await pipe.execute()
        return sum(int(n) for n in gone[::2])

    def open_carts(self) -> int:
        """Sessions seen within `idle_seconds` whose cart is not empty and not bought.

        As of the last `refresh_counts`.
        """
        return self._open_carts

    def __len__(self) -> int:
        """Sessions seen within `idle_seconds`, as of the last `refresh_counts`."""
        return self._live_count


def _offer_id_of(packed: bytes) -> str | None:
    """The session's offer id (`oi`) in its packed state."""
    offer_id = msgpack.unpackb(packed, raw=True).get(b"oi")
    return None if offer_id is None else offer_id.decode()


def _applied(events: Sequence[Event], status: bytes) -> Applied:
    result = Applied()
    for event, outcome in zip(events, status.decode(), strict=True):
        if outcome == "x":
            result.errors.append(ProtocolError("invalid_props", CART_FULL, event.id))
            continue
        if outcome == "d":
            result.duplicates += 1
            result.repeated.append(event)
        else:
            result.fresh.append(event)
        result.acked.append(event.id)
    return result
