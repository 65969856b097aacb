"""Site look-ups for the collector, cached briefly so a connect costs no query."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async

from offers.models import SITE_KEY_MAX_LENGTH, SITE_KEY_PATTERN, Site, origin_allowed

CACHE_SECONDS = 10.0
_SITE_KEY = re.compile(SITE_KEY_PATTERN)


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
    # A key no site can have is refused without a query, and never cached (a NUL would even
    # fail in PostgreSQL).
    if len(key) > SITE_KEY_MAX_LENGTH or not _SITE_KEY.fullmatch(key):
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
