"""Money: what offers earned against the holdout, from the record (`GET /api/uplift/`).

The dashboard's money panel calls `uplift_money(window="24h")`, off the event loop
(`database_sync_to_async`): it answers the same dict as the API.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any, Final

from django.db.models import Case, IntegerField, Max, Value, When
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from offers.models import Decision, Mark, Offer
from offers.operators import is_operator
from streaming.money import Sessions, money
from streaming.policy import Outcome

WINDOWS: Final = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
}
DEFAULT_WINDOW: Final = "24h"


def uplift_money(*, window: str = DEFAULT_WINDOW, now: dt.datetime | None = None) -> dict[str, Any]:
    """Offered against held-out at-risk sessions decided in the last `window` ("1h", "24h" or
    "7d"; ValueError otherwise) before `now`:

        {"window": "24h", "verdict": "...",
         "offered": {"sessions", "buyers", "revenue", "discount"}, "holdout": {...},
         "per_1000": {"incremental_buyers": CI, "incremental_revenue": CI,
                      "net_incremental_revenue": CI}}

    CI is `{"estimate", "low", "high"}` (95%, Welch; `streaming.money`), null while a group is
    empty. A session is offered when it had an `offer` decision in the window, held out when it
    had only `holdout` ones. A buyer is a session with a purchase; its revenue is the purchase's
    total (what was paid, after any discount; 0 when the shop did not say), and its discount
    that of each code it redeemed: total x percent / (100 - percent).

    Reads the database (several queries): call it from a thread, never from the event loop.
    """
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    now = now or timezone.now()
    decided = Decision.objects.filter(
        at__gt=now - WINDOWS[window],
        at__lte=now,
        outcome__in=[Outcome.OFFER, Outcome.HOLDOUT],
    )
    offered_flag = Case(
        When(outcome=Outcome.OFFER, then=Value(1)), default=Value(0), output_field=IntegerField()
    )
    groups: dict[str, bool] = {
        row["session"]: bool(row["offered"])
        for row in decided.order_by().values("session").annotate(offered=Max(offered_flag))
    }
    sessions = decided.order_by().values("session")
    paid: dict[str, Decimal | None] = dict(
        Mark.objects.filter(kind=Mark.Kind.PURCHASE, session__in=sessions).values_list(
            "session", "total"
        )
    )
    redeemed: defaultdict[str, list[tuple[Decimal | None, int]]] = defaultdict(list)
    for session, total, percent in Offer.objects.filter(
        session__in=sessions, redeemed_at__isnull=False
    ).values_list("session", "redeemed_total", "discount_percent"):
        redeemed[session].append((total, percent))

    columns: dict[bool, tuple[list[float], list[float], list[float]]] = {
        True: ([], [], []),
        False: ([], [], []),
    }
    for session, offered in groups.items():
        bought, revenue, discount = columns[offered]
        codes = redeemed.get(session, [])
        total = paid.get(session)
        if total is None:  # a purchase that did not say its total: what its redemptions said
            total = sum((used for used, _ in codes if used is not None), Decimal(0))
        bought.append(1.0 if session in paid else 0.0)
        revenue.append(float(total))
        discount.append(sum(_discount(used if used is not None else total, p) for used, p in codes))
    figures = money(Sessions.of(*columns[True]), Sessions.of(*columns[False])).as_json()
    return {"window": window, **figures}


def _discount(total: Decimal | None, percent: int) -> float:
    """What a code took off an order that paid `total` after it."""
    if total is None or not 0 < percent < 100:
        return 0.0
    return float(total) * percent / (100 - percent)


@require_GET
def api_uplift(request: HttpRequest) -> HttpResponse:
    """`GET /api/uplift/?window=1h|24h|7d` (default 24h), operators only: `uplift_money`."""
    if not is_operator(request.user):
        return JsonResponse(
            {
                "error": "forbidden",
                "detail": "operators only: staff with the offers.view_decision permission",
            },
            status=403,
        )
    window = request.GET.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        return JsonResponse(
            {"error": "bad_window", "detail": f"window must be one of {', '.join(WINDOWS)}"},
            status=400,
        )
    return JsonResponse(uplift_money(window=window))
