"""Site look-ups for the collector, cached briefly so a connect costs no query."""

from __future__ import annotations

import time
from dataclasses import dataclass

from channels.db import database_sync_to_async

from offers.models import Site, origin_allowed

CACHE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SiteInfo:
    key: str
    origins: frozenset[str]

    def allows_origin(self, origin: str | None) -> bool:
        return origin_allowed(self.origins, origin)


_cache: dict[str, tuple[float, SiteInfo | None]] = {}


def forget_sites() -> None:
    _cache.clear()


def _load(key: str) -> SiteInfo | None:
    site = Site.objects.filter(key=key).only("key", "allowed_origins").first()
    return None if site is None else SiteInfo(site.key, site.origins())


async def find_site(key: str) -> SiteInfo | None:
    if not key or len(key) > 64:
        return None
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    info: SiteInfo | None = await database_sync_to_async(_load)(key)
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key] = (now + CACHE_SECONDS, info)
    return info
