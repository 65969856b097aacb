"""Redis mode's connection and key layout, on one Redis or on a Redis Cluster.

`REDIS_URL=redis://HOST:PORT/DB` is one Redis (or a primary with replicas);
`REDIS_URL=redis+cluster://HOST:PORT` (`rediss+cluster://` with TLS) is a Redis Cluster, reached
through any of its nodes, which tell the client the rest.

On a cluster a script may touch the keys of one hash slot only. So the keys a session's scripts
touch together (its state, its offer frame, and the sorted sets of pauses, leases, live
sessions and open carts, and the record stream its decisions go into) share the hash tag of one
of `CLUSTER_SHARDS` shards: `lo:{3}:s:<session id>`, `lo:{3}:pauses`, ... A session's shard is
a CRC32 of its id, the same in every process, so each frame is one script on one master, and
the shards' slots are spread over the masters by Redis. Workers claim due pauses from every
shard, each pause under a lease of its own. On one Redis there is one shard, `lo:{0}:`.

Keys with no session (the day's budget, the dashboard's totals and feeds, the alert lead) are
each one key, or carry a tag of their own where a transaction spans several.
"""

from __future__ import annotations

import urllib.parse
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Shards of a cluster: enough that sixteen masters each hold one, few enough that a worker
# polls them all in one pipeline.
CLUSTER_SHARDS: Final = 16
CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

Client: TypeAlias = aioredis.Redis | RedisCluster


def is_cluster_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in CLUSTER_SCHEMES


def node_url(url: str) -> str:
    """The URL of the node a cluster URL names, as a plain Redis URL (a plain URL unchanged)."""
    parts = urllib.parse.urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    return url if scheme is None else urllib.parse.urlunsplit(parts._replace(scheme=scheme))


def connect(url: str, **options: Any) -> Client:
    """A client for `url`, one Redis or a cluster.

    After Redis (or a master) restarts, pooled connections are dead: a command retried on a
    fresh connection makes the first request after recovery succeed. Replays are safe: an
    event applied twice is a duplicate, a claim made twice waits out its lease.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)
    if is_cluster_url(url):
        return RedisCluster.from_url(
            node_url(url),
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **options,
        )
    return aioredis.Redis.from_url(
        url,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
        **options,
    )


def connect_sync(url: str, **options: Any) -> Any:
    """A blocking client for `url` (for commands run by hand, and sync views), one Redis or a
    cluster."""
    import redis
    import redis.cluster

    if is_cluster_url(url):
        return redis.cluster.RedisCluster.from_url(node_url(url), **options)
    return redis.Redis.from_url(url, **options)


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def cluster_hosts(url: str, timeout: float = 5.0) -> list[str]:
    """The URLs of a cluster's masters, sorted (every process lists them alike)."""
    import redis.cluster

    client = redis.cluster.RedisCluster.from_url(node_url(url), socket_timeout=timeout)
    try:
        parts = urllib.parse.urlsplit(node_url(url))
        netloc = parts.netloc.rpartition("@")
        auth = f"{netloc[0]}@" if netloc[1] else ""
        return sorted(
            urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}{node.host}:{node.port}"))
            for node in client.get_primaries()  # type: ignore[no-untyped-call]
        )
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class Shards:
    """The key layout: which shard a session is on, and each shard's keys."""

    prefix: str = "lo:"
    count: int = 1

    @classmethod
    def of_client(cls, client: Any, prefix: str = "lo:") -> Shards:
        """The layout for a client (async or blocking) of one Redis or of a cluster."""
        import redis.cluster

        on_cluster = isinstance(client, RedisCluster | redis.cluster.RedisCluster)
        return cls(prefix, CLUSTER_SHARDS if on_cluster else 1)

    @classmethod
    def of_url(cls, url: str, prefix: str = "lo:") -> Shards:
        return cls(prefix, CLUSTER_SHARDS if is_cluster_url(url) else 1)

    def shard_of(self, session_id: str) -> int:
        if self.count == 1:
            return 0
        return zlib.crc32(session_id.encode()) % self.count

    def tag(self, shard: int) -> str:
        """The start of every key of `shard`: its hash tag."""
        return f"{self.prefix}{{{shard}}}:"

    def session(self, session_id: str) -> str:
        return f"{self.tag(self.shard_of(session_id))}s:{session_id}"

    def offer(self, session_id: str) -> str:
        return f"{self.tag(self.shard_of(session_id))}o:{session_id}"

    def offers_pattern(self) -> str:
        """A SCAN pattern matching every session's offer frame."""
        return f"{self.prefix}{{*}}:o:*"

    def records_of(self, session_id: str) -> str:
        return self.records(self.shard_of(session_id))

    def pauses(self, shard: int) -> str:
        return f"{self.tag(shard)}pauses"

    def leases(self, shard: int) -> str:
        return f"{self.tag(shard)}leases"

    def live(self, shard: int) -> str:
        return f"{self.tag(shard)}live"

    def carts(self, shard: int) -> str:
        return f"{self.tag(shard)}carts"

    def records(self, shard: int) -> str:
        return f"{self.tag(shard)}records"

    def __iter__(self) -> Any:
        return iter(range(self.count))


ScriptCall: TypeAlias = tuple[Sequence[str | bytes], Sequence[str | bytes | int | float]]


async def run_script(
    client: Client, script: AsyncScript, calls: Sequence[ScriptCall], *, raise_on_error: bool = True
) -> list[Any]:
    """Each call of `script`, in order, in one pipeline (on a cluster, one a master, at once).

    A restarted or flushed Redis forgot the script; NOSCRIPT means it did not run, so the
    calls that got it are sent again once the script is loaded (on every master of a cluster).
    With `raise_on_error`, the first failed call's error is raised; otherwise errors come back
    in place of their replies.
    """
    replies = await _pipeline(client, script.sha, calls)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        script.sha = await client.script_load(script.script)
        again = await _pipeline(client, script.sha, [calls[i] for i in missing])
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    if raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


async def _pipeline(client: Client, sha: str, calls: Sequence[ScriptCall]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            # (a cluster's pipeline has no evalsha method; the command itself routes by its keys)
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))
