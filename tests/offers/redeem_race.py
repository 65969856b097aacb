"""Ten orders racing with one code through `POST /api/redeem/`, each in a thread of its own with
a connection of its own, against the database of DATABASE_URL (migrated here).

Run as `python -m tests.offers.redeem_race` (tests/offers/test_redeem.py does); prints one JSON
line: the answers' statuses, and what the record holds afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading

RACERS = 10


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    from offers.models import Decision, Mark, Offer, Site
    from offers.services import api_key_create, record_write
    from streaming.records import MarkMade

    setup_test_environment()
    call_command("migrate", verbosity=0)
    now = timezone.now()
    site = Site.objects.create(key="racing", name="Racing shop")
    decision = Decision.objects.create(
        site=site, session="s-race", pause_key="s-race:1", at=now, outcome="offer"
    )
    Offer.objects.create(
        decision=decision,
        public_id="o-race",
        session="s-race",
        code="SAVE10-RACE",
        title="t",
        message="m",
        discount_percent=10,
        created_at=now,
        expires_at=now + dt.timedelta(minutes=30),
    )
    _, key = api_key_create(site=site, name="checkout")
    connection.close()

    start = threading.Barrier(RACERS)
    statuses: list[int] = []
    lock = threading.Lock()

    def race(order: int) -> None:
        client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
        body = {"code": "SAVE10-RACE", "order_id": f"order-{order}", "total": 90.0}
        try:
            start.wait()
            answer = client.post("/api/redeem/", body, content_type="application/json")
            with lock:
                statuses.append(answer.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    offer = Offer.objects.get()
    purchases = list(
        Mark.objects.filter(kind="purchase", session="s-race").values("order_id", "total", "code")
    )
    # A purchase told in two halves (the snippet's event, then the shop's redemption) is one.
    at = now.timestamp()
    record_write(records=[MarkMade("s-halves", None, "purchase", at, order_id="7")])
    record_write(records=[MarkMade("s-halves", None, "purchase", at, total=12.5, code="C-1")])
    record_write(records=[MarkMade("s-halves", None, "purchase", at, order_id="8", total=1.0)])
    halves = list(
        Mark.objects.filter(session="s-halves").values("order_id", "total", "code", "applied")
    )
    print(
        json.dumps(
            {
                "statuses": sorted(statuses),
                "redeemed_by": offer.redeemed_order_id,
                "purchases": [{**p, "total": str(p["total"])} for p in purchases],
                "converted": Decision.objects.filter(converted_at__isnull=False).count(),
                "halves": [{**h, "total": str(h["total"])} for h in halves],
            }
        )
    )


if __name__ == "__main__":
    main()
