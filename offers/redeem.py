"""`POST /api/redeem/`: a shop's backend redeems an offer code for an order, with its site's key.

    Authorization: Bearer lok_…
    {"code": "SAVE10-7KQ2XH4M9P", "order_id": "1042", "total": 89.91}

200 `{"discount_percent", "offer_id"}` once per code, and again for the same order (a retry);
409 a code used by another order, 410 expired, 404 unknown or another site's, 401 without a
valid key, 400 a malformed body (413 one over 4 KiB), 429 past the key's rate (with Retry-After). Every error is
`{"error": CODE, "detail": WORDS}`. `total` is what the shopper paid, after the discount, like
the `purchase` event's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from decimal import Decimal
from typing import Annotated, Any, Final

import msgspec
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from offers.services import OfferRefused, Refusal, api_key_authenticate, offer_redeem
from streaming import lua
from streaming.protocol import MAX_PRICE
from streaming.ratelimit import TokenBucket
from streaming.redis_client import connect_sync

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 4096

_NO_CONTROL: Final = "^[^\x00-\x1f\x7f]*$"


class RedeemBody(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=_NO_CONTROL)]
    order_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_NO_CONTROL)]
    total: Annotated[float, msgspec.Meta(ge=0, le=MAX_PRICE)]


_decoder = msgspec.json.Decoder(RedeemBody)

_REFUSED: Final = {
    Refusal.UNKNOWN: (404, "unknown_code", "no offer of this site has this code"),
    Refusal.USED: (409, "code_used", "this code is already used by another order"),
    Refusal.EXPIRED: (410, "code_expired", "this code has expired"),
}


class KeyLimiter:
    """A token bucket a key: `rate` redemptions a second, bursts of `burst`
    (REDEEM_RATE_PER_SECOND and REDEEM_BURST unless given).

    In Redis mode (`redis_url`, REDIS_URL unless given) a key's bucket is in Redis, shared by
    every process that serves the API, on the Redis server's clock. Without Redis, or while it
    does not answer, each process keeps its own buckets, shared by its threads.
    """

    def __init__(
        self, *, rate: float | None = None, burst: int | None = None, redis_url: str | None = None
    ) -> None:
        self.rate = settings.REDEEM_RATE_PER_SECOND if rate is None else rate
        self.burst = settings.REDEEM_BURST if burst is None else burst
        self.redis_url = settings.REDIS_URL if redis_url is None else redis_url
        self._buckets: dict[int, TokenBucket] = {}
        self._lock = threading.Lock()
        self._script: Any = None
        self._warned_at = -math.inf

    def take(self, key_id: int, now: float) -> bool:
        if self.redis_url:
            try:
                return self._take_shared(key_id)
            except RedisError as exc:
                if now - self._warned_at >= 60:
                    self._warned_at = now
                    log.warning(
                        "redeem rate limit: Redis did not answer (%s); each process limits "
                        "on its own meanwhile",
                        exc,
                    )
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = TokenBucket(
                    rate=self.rate, burst=self.burst, now=now
                )
            return bucket.take(1, now) == 1

    def _take_shared(self, key_id: int) -> bool:
        with self._lock:
            if self._script is None:
                client = connect_sync(
                    self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
                )
                self._script = client.register_script(lua.script("take_token"))
        taken = self._script(keys=[f"lo:redeem:{key_id}"], args=[repr(self.rate), self.burst])
        return int(taken) == 1

    def retry_after(self) -> int:
        """Whole seconds until a refused key has a token again, at most."""
        return max(1, math.ceil(1 / self.rate))


limiter = KeyLimiter()


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _bearer(request: HttpRequest) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


@csrf_exempt  # a server-to-server API: no cookies, only the key
def api_redeem(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = _error(405, "method_not_allowed", "redeem with POST")
        response["Allow"] = "POST"
        return response
    key = api_key_authenticate(secret=_bearer(request))
    if key is None:
        response = _error(401, "unauthorized", "send a valid site API key: Bearer KEY")
        response["WWW-Authenticate"] = 'Bearer realm="liveoffers"'
        return response
    if not limiter.take(key.pk, time.monotonic()):
        response = _error(429, "rate_limited", "too many redemptions with this key; wait a moment")
        response["Retry-After"] = str(limiter.retry_after())
        return response
    declared = request.META.get("CONTENT_LENGTH") or ""
    too_large = declared.isdigit() and int(declared) > MAX_BODY_BYTES
    if too_large or len(request.body) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        body = _decoder.decode(request.body)
    except msgspec.ValidationError as exc:
        return _error(400, "bad_body", str(exc).replace("`$", "`body"))
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return _error(400, "bad_json", 'the body must be JSON: {"code", "order_id", "total"}')
    try:
        offer = offer_redeem(
            code=body.code.strip().upper(),
            site=key.site.key,
            order_id=body.order_id,
            total=Decimal(str(round(body.total, 2))),
        )
    except OfferRefused as refused:
        return _error(*_REFUSED[refused.refusal])
    return JsonResponse({"discount_percent": offer.discount_percent, "offer_id": offer.public_id})
