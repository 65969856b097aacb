from __future__ import annotations

import datetime as dt
import functools
import hmac
import re
import time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST, require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from offers.bodies import COLLECT_BYTES
from offers.collector import ingest
from offers.limits import client_address
from offers.models import SITE_KEY_MAX_LENGTH, SITE_KEY_PATTERN, Decision, Offer, Product
from offers.operators import is_operator, operator_required
from offers.runtime import get_runtime
from offers.services import OfferRefused, Refusal, offer_check, offer_redeem
from offers.sites import SiteUnknowable, find_site
from offers.tokens import read_token
from streaming.protocol import MAX_BATCH_EVENTS, UNREADABLE, decode_events, unreadable_detail

MAX_COLLECT_BYTES = COLLECT_BYTES


class _CollectBody(msgspec.Struct, forbid_unknown_fields=True):
    site: Annotated[
        str, msgspec.Meta(min_length=1, max_length=SITE_KEY_MAX_LENGTH, pattern=SITE_KEY_PATTERN)
    ]
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]


_collect_decoder = msgspec.json.Decoder(_CollectBody)


def _json_error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


@csrf_exempt
@require_POST
async def collect(request: HttpRequest) -> HttpResponse:
    """`POST /collect/`: the snippet's last events, sent by `navigator.sendBeacon` on page hide."""
    try:
        raw = request.body if _declared_length(request) <= MAX_COLLECT_BYTES else None
    except RequestDataTooBig:
        raw = None
    if raw is None or len(raw) > MAX_COLLECT_BYTES:
        return _json_error(413, "too_large", f"the body is over {MAX_COLLECT_BYTES} bytes")
    try:
        body = _collect_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return _json_error(400, "bad_frame", str(exc).replace("`$", "`body"))
    except (msgspec.DecodeError, *UNREADABLE) as exc:
        return _json_error(400, "bad_json", unreadable_detail(exc))
    try:
        site = await find_site(body.site)
    except SiteUnknowable:
        return _json_error(503, "unavailable", "the database is away; send the events again later")
    if site is None:
        return _json_error(403, "unknown_site", "no site has this key")
    origin = request.headers.get("Origin")
    if not site.allows_origin(origin):
        return _json_error(403, "origin", "this origin may not send events for this site")
    runtime = get_runtime()
    session_id = read_token(body.token, site.key, max_age=runtime.token_max_age)
    if session_id is None:
        return _json_error(403, "bad_token", "the session token is forged, expired or missing")
    now = time.time()
    result = await ingest(
        runtime,
        session_id=session_id,
        site=site.key,
        items=decode_events(body.events),
        client=client_address(
            request.META.get("REMOTE_ADDR"),
            request.headers.get("X-Forwarded-For"),
            runtime.limits.trusted_proxies,
        ),
        now=now,
    )
    response = JsonResponse(
        {"ack": result.acked, "errors": [error.frame() for error in result.errors]}, status=202
    )
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
    return response


def _declared_length(request: HttpRequest) -> int:
    """The body's length as its headers declare it: 0 when they do not (the body is measured)."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    return int(declared) if declared.isascii() and declared.isdigit() else 0


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row == (1,)
    except Exception:
        return False


async def _redis_answers(url: str) -> bool:
    """Redis answers; a cluster's node named in the URL also says every slot is served."""
    import redis.asyncio

    from streaming.redis_client import is_cluster_url, node_url

    client = redis.asyncio.Redis.from_url(node_url(url), socket_timeout=1, socket_connect_timeout=1)
    try:
        if is_cluster_url(url):
            info: dict[str, Any] = await client.cluster("INFO")
            return info.get("cluster_state") == "ok"
        return bool(await client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


@require_GET
async def healthz(_request: HttpRequest) -> HttpResponse:
    database = await sync_to_async(_database_answers)()
    checks = {"database": "ok" if database else "down"}
    if settings.REDIS_URL:
        checks["redis"] = "ok" if await _redis_answers(settings.REDIS_URL) else "down"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "down",
            "mode": "redis" if settings.REDIS_URL else "embedded",
            **checks,
        },
        status=200 if healthy else 503,
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            return HttpResponse(
                "metrics need the bearer token\n", status=401, content_type="text/plain"
            )
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


@operator_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "offers/dashboard.html")


# --- the demo shop ------------------------------------------------------------------------------
DEMO_SITE = "demo"


def _demo_products() -> Any:
    return Product.objects.filter(site__key=DEMO_SITE, active=True)


def shop(request: HttpRequest) -> HttpResponse:
    return render(request, "offers/shop.html", {"products": _demo_products()})


def product(request: HttpRequest, sku: str) -> HttpResponse:
    item = get_object_or_404(_demo_products(), sku=sku)
    others = _demo_products().filter(category=item.category).exclude(pk=item.pk)[:4]
    view = {"product_id": item.sku, "price": float(item.price), "category": item.category[:128]}
    return render(
        request, "offers/product.html", {"product": item, "others": others, "product_view": view}
    )


def cart(request: HttpRequest) -> HttpResponse:
    return render(request, "offers/cart.html")


@ensure_csrf_cookie
def checkout(request: HttpRequest) -> HttpResponse:
    return render(request, "offers/checkout.html")


def _posted_code(request: HttpRequest) -> str:
    return request.POST.get("code", "").strip().upper()[:40]


def _refusal(code: str) -> str:
    """Why a demo checkout refuses `code`, in words for the shopper."""
    offer = (
        Offer.objects.filter(code=code, decision__site__key=DEMO_SITE)
        .only("redeemed_at", "expires_at")
        .first()
        if code
        else None
    )
    if offer is None:
        return "That code is unknown."
    if offer.redeemed_at is not None:
        return "That code is already used."
    return "That code has expired."


@require_POST
def checkout_code(request: HttpRequest) -> HttpResponse:
    """The demo checkout's Apply: whether an offer's code would take off its discount now (known
    on this site, unused, unexpired). It only looks: the order is what uses the code."""
    code = _posted_code(request)
    offer = offer_check(code=code, site=DEMO_SITE) if code else None
    if offer is None:
        return JsonResponse({"valid": False, "detail": _refusal(code)}, status=400)
    return JsonResponse({"valid": True, "discount_percent": offer.discount_percent})


_ORDER_ID = re.compile(r"D-[0-9A-Z]{1,20}")
_CENT = Decimal("0.01")
_MAX_ORDER_TOTAL = Decimal(10) ** 9


def _order_total(raw: str) -> Decimal | None:
    """The cart's total as the checkout sends it ("249.00"), or None when it is not one."""
    try:
        total = Decimal(raw) if len(raw) <= 16 else None
    except InvalidOperation:
        return None
    if total is None or not total.is_finite() or not 0 <= total < _MAX_ORDER_TOTAL:
        return None
    return total.quantize(_CENT, ROUND_HALF_UP)


@require_POST
def checkout_order(request: HttpRequest) -> HttpResponse:
    """`POST /checkout/order/` (order_id, total, code): places a demo order. Its discount code,
    if any, is redeemed now, at most once however many checkouts race with it: when it cannot be
    (used meanwhile, expired) the order is not placed (409) and the shopper is told why."""
    order_id = request.POST.get("order_id", "")
    if not _ORDER_ID.fullmatch(order_id):
        return _json_error(400, "bad_order", "order_id must be D- and up to 20 capitals or digits")
    total = _order_total(request.POST.get("total", ""))
    if total is None:
        return _json_error(400, "bad_total", "total must be an amount from 0 (the cart's)")
    code = _posted_code(request)
    percent = 0
    if code:
        # The code's discount, to know what is paid; the redemption is what says if it applies.
        offered = Offer.objects.filter(code=code, decision__site__key=DEMO_SITE)
        percent = offered.values_list("discount_percent", flat=True).first() or 0
    paid = (total * (100 - percent) / 100).quantize(_CENT, ROUND_HALF_UP)
    if code:
        # As `POST /api/redeem/` does: once, the same order again is no second use.
        try:
            offer_redeem(code=code, site=DEMO_SITE, order_id=order_id, total=paid)
        except OfferRefused as refused:
            return JsonResponse(
                {"placed": False, "error": "code_refused", "detail": _REFUSALS[refused.refusal]},
                status=409,
            )
    return JsonResponse(
        {"placed": True, "order_id": order_id, "discount_percent": percent, "total": float(paid)}
    )


_REFUSALS = {
    Refusal.UNKNOWN: "That code is unknown.",
    Refusal.USED: "That code is already used.",
    Refusal.EXPIRED: "That code has expired.",
}


@functools.cache
def _favicon() -> bytes:
    return (settings.BASE_DIR / "static" / "favicon.svg").read_bytes()


@require_safe
def favicon(_request: HttpRequest) -> HttpResponse:
    """`/favicon.ico`, asked by browsers whatever the page links: the SVG icon the pages link."""
    response = HttpResponse(_favicon(), content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response


API_LIMIT_MAX = 1000
API_LIMIT_DEFAULT = 100


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _offer_json(offer: Offer | None) -> dict[str, object] | None:
    if offer is None:
        return None
    return {
        "id": offer.public_id,
        "code": offer.code,
        "discount_percent": offer.discount_percent,
        "shown_at": _iso(offer.shown_at),
        "accepted_at": _iso(offer.accepted_at),
        "dismissed_at": _iso(offer.dismissed_at),
        "redeemed_at": _iso(offer.redeemed_at),
    }


def _decision_json(decision: Decision) -> dict[str, object]:
    offer: Offer | None = getattr(decision, "offer", None)
    return {
        "id": decision.pk,
        "session": decision.session,
        "at": _iso(decision.at),
        "outcome": decision.outcome,
        "risk": decision.risk,
        "model": decision.model_label,
        "shadow_risk": decision.shadow_risk,
        "shadow_model": decision.shadow_model or None,
        "features": decision.features,
        "reasons": decision.reasons,
        "reasons_in_words": decision.reasons_in_words(),
        "why": decision.why,
        "cart_value": float(decision.cart_value),
        "converted_at": _iso(decision.converted_at),
        "offer_id": offer.public_id if offer else None,
        "offer": _offer_json(offer),
    }


class BadParameter(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


_LIMIT = re.compile(r"[0-9]{1,4}")
# A page's last decision, `at` in microseconds since the epoch and id: "1764007200000000.42".
_CURSOR = re.compile(r"(-?[0-9]{1,18})\.([0-9]{1,18})")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _since(raw: str) -> dt.datetime:
    # A "+" in an unencoded query string arrives as a space.
    try:
        readable = len(raw) <= 64 and raw.isascii() and raw.isprintable()
        since = parse_datetime(raw.replace(" ", "+")) if readable else None
        if since is not None:
            if timezone.is_naive(since):
                since = since.replace(tzinfo=dt.UTC)
            # In UTC here: a moment that only overflows in UTC fails now, not in the database.
            since = since.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        since = None
    if since is None:
        raise BadParameter("bad_since", "since must be an ISO 8601 date and time")
    return since


def _limit(raw: str) -> int:
    limit = int(raw) if _LIMIT.fullmatch(raw) else 0
    if not 1 <= limit <= API_LIMIT_MAX:
        raise BadParameter("bad_limit", f"limit must be a whole number from 1 to {API_LIMIT_MAX}")
    return limit


def _cursor_of(decision: Decision) -> str:
    micros = (decision.at - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}.{decision.pk}"


def _after(raw: str) -> Q:
    """The decisions after a cursor, in (at, id) order: ties in time are split by id."""
    match = _CURSOR.fullmatch(raw)
    try:
        if match is None:
            raise ValueError(raw)
        at = _EPOCH + dt.timedelta(microseconds=int(match[1]))
    except (ValueError, OverflowError):
        raise BadParameter("bad_cursor", "cursor must be one from a page's next URL") from None
    pk = int(match[2])
    return Q(at__gt=at) | Q(at=at, pk__gt=pk)


@require_GET
def api_decisions(request: HttpRequest) -> HttpResponse:
    """`GET /api/decisions/?since=ISO8601&limit=N`: operators only, oldest first, `since` inclusive.

    A page ends with `next`, the URL of the following page (null on the last one): a cursor on
    the last decision's time and id, so decisions sharing a moment are neither skipped nor
    repeated across pages.
    """
    if not is_operator(request.user):
        return _json_error(
            403, "forbidden", "operators only: staff with the offers.view_decision permission"
        )
    decisions = Decision.objects.select_related("offer").order_by("at", "id")
    params = request.GET
    try:
        if "since" in params:
            decisions = decisions.filter(at__gte=_since(params["since"]))
        if "cursor" in params:
            decisions = decisions.filter(_after(params["cursor"]))
        limit = _limit(params.get("limit", str(API_LIMIT_DEFAULT)))
    except BadParameter as exc:
        return _json_error(400, exc.code, exc.detail)
    page = list(decisions[: limit + 1])
    next_url = None
    if len(page) > limit:
        page = page[:limit]
        following = params.copy()
        following["cursor"] = _cursor_of(page[-1])
        next_url = request.build_absolute_uri(f"{request.path}?{following.urlencode()}")
    return JsonResponse({"decisions": [_decision_json(d) for d in page], "next": next_url})
