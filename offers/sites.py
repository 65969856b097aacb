"""Site look-ups for the collector, cached briefly so a connect costs no query.

While the database is away, a site looked up before is still found (its last known origins):
shoppers go on connecting, and their events and offers go on, with the record waiting in the
journal. A site never looked up cannot be: `SiteUnknowable`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.db import DatabaseError

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


class SiteUnknowable(Exception):
    """The database is away and the site was never looked up before: try again later."""


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
    try:
        info: SiteInfo | None = await database_sync_to_async(_load)(key)
    except DatabaseError as exc:
        if cached is None:
            raise SiteUnknowable(key) from exc
        info = cached[1]  # the database is away: what was known of the site a moment ago
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key] = (now + CACHE_SECONDS, info)
    return info
