"""Sites' API keys and `POST /api/redeem/`: a shop's backend uses a code once for an order, and
the session's purchase is recorded with what was paid."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sys
import time
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from offers import redeem, services
from offers.collector import ingest
from offers.models import ApiKey, Decision, Mark, Offer, Site
from offers.recorder import Recorder
from offers.runtime import Runtime
from offers.services import api_key_authenticate, api_key_create, api_key_revoke, record_write
from streaming.policy import Outcome
from streaming.records import DecisionMade, MarkMade, OfferMade
from tests.factories import T0, event
from tests.redis_servers import OwnRedis, RedisServer
from tests.subprocesses import ROOT, project_env
from tests.test_services import postgres_url  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db

CODE = "SAVE10-ABCDEFGHJK"


def an_offer(
    site: Site,
    *,
    code: str = CODE,
    session: str = "s-1",
    expires_in: float = 30 * 60,
    percent: int = 10,
) -> Offer:
    now = timezone.now()
    decision = Decision.objects.create(
        site=site, session=session, pause_key=f"{session}:1", at=now, outcome=Outcome.OFFER
    )
    return Offer.objects.create(
        decision=decision,
        public_id=f"o-{code}",
        session=session,
        code=code,
        title="t",
        message="m",
        discount_percent=percent,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=expires_in),
    )


@pytest.fixture
def shop_key(demo_site) -> str:
    """The demo shop's API key, as its backend holds it."""
    _, key = api_key_create(site=demo_site, name="checkout server")
    return key


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch) -> None:
    monkeypatch.setattr(redeem, "limiter", redeem.KeyLimiter(rate=20.0, burst=100))


def redeem_with(
    client: Client, key: str | None, body: Any = None, **fields: Any
) -> Any:  # the test client's response
    payload = body if body is not None else json.dumps({"total": 90.0, **fields})
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.post("/api/redeem/", payload, content_type="application/json", headers=headers)


# --- API keys --------------------------------------------------------------------------------


def test_a_key_is_kept_only_as_its_hash_and_prefix(demo_site):
    key, secret = api_key_create(site=demo_site, name="checkout server")
    assert secret.startswith("lok_") and len(secret) >= 40
    stored = ApiKey.objects.values().get(pk=key.pk)
    assert stored["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert stored["prefix"] == secret[:12]
    assert not any(secret in str(value) for value in stored.values())
    assert api_key_authenticate(secret=secret) == key
    assert api_key_authenticate(secret=secret[:-1] + "x") is None
    assert api_key_authenticate(secret="") is None


def test_a_revoked_key_no_longer_works(demo_site):
    key, secret = api_key_create(site=demo_site, name="old server")
    assert api_key_revoke(key=key) is True
    assert api_key_revoke(key=key) is False  # once
    assert key.revoked_at is not None
    assert api_key_authenticate(secret=secret) is None


def test_a_keys_last_use_is_written_at_most_once_a_minute(demo_site):
    key, secret = api_key_create(site=demo_site, name="checkout server")
    at = timezone.now()
    api_key_authenticate(secret=secret, at=at)
    api_key_authenticate(secret=secret, at=at + dt.timedelta(seconds=30))
    key.refresh_from_db()
    assert key.last_used_at == at
    api_key_authenticate(secret=secret, at=at + dt.timedelta(seconds=61))
    key.refresh_from_db()
    assert key.last_used_at == at + dt.timedelta(seconds=61)


@pytest.fixture
def admin_client(client: Client) -> Client:
    user = User.objects.create_user("ada", password="pw", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_the_admin_shows_a_new_key_once_lists_keys_and_revokes_them(
    admin_client: Client, demo_site, caplog
):
    caplog.set_level(logging.DEBUG)
    made = admin_client.post(
        "/admin/offers/apikey/add/", {"site": demo_site.pk, "name": "checkout"}, follow=True
    )
    assert made.status_code == 200
    key = ApiKey.objects.get()
    shown = [str(m) for m in made.context["messages"] if "copy it now" in str(m)]
    assert len(shown) == 1
    secret = shown[0].split(" is ")[1].split()[0]
    assert secret.startswith(key.prefix) and ApiKey.digest(secret) == key.secret_hash
    assert secret not in caplog.text  # never logged

    listed = admin_client.get("/admin/offers/apikey/")
    page = listed.content.decode()
    assert secret not in page  # shown once: never again
    assert key.prefix in page and "checkout" in page and "demo" in page and "active" in page
    assert secret not in admin_client.get(f"/admin/offers/apikey/{key.pk}/change/").content.decode()

    revoked = admin_client.post(
        "/admin/offers/apikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
        follow=True,
    )
    assert "1 key revoked" in revoked.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert redeem_with(Client(), secret, code=CODE, order_id="1").status_code == 401
    # the list filters by status, in words
    api_key_create(site=demo_site, name="kept")
    active = admin_client.get("/admin/offers/apikey/?status=active").content.decode()
    revoked_only = admin_client.get("/admin/offers/apikey/?status=revoked").content.decode()
    assert "By status" in active and ">Active<" in active and ">Revoked<" in active
    assert ">kept<" in active and ">checkout<" not in active
    assert ">checkout<" in revoked_only and ">kept<" not in revoked_only


# --- POST /api/redeem/ -----------------------------------------------------------------------


def test_a_code_is_redeemed_once_and_its_order_may_ask_again(client: Client, demo_site, shop_key):
    offer = an_offer(demo_site)
    first = redeem_with(client, shop_key, code=CODE.lower(), order_id="1042", total=90.0)
    assert first.status_code == 200
    assert first.json() == {"discount_percent": 10, "offer_id": offer.public_id}
    offer.refresh_from_db()
    assert offer.redeemed_at is not None
    assert (offer.redeemed_order_id, offer.redeemed_total) == ("1042", Decimal("90.00"))

    again = redeem_with(client, shop_key, code=CODE, order_id="1042", total=90.0)
    assert (again.status_code, again.json()) == (200, first.json())  # a retry, not a second use

    other = redeem_with(client, shop_key, code=CODE, order_id="1043")
    assert other.status_code == 409
    assert other.json()["error"] == "code_used"
    offer.refresh_from_db()
    assert offer.redeemed_order_id == "1042"


def test_the_redemption_records_the_purchase_and_converts_the_session(
    client: Client, demo_site, shop_key
):
    an_offer(demo_site, session="s-buyer")
    assert redeem_with(client, shop_key, code=CODE, order_id="1042", total=89.9).status_code == 200
    purchase = Mark.objects.get(kind=Mark.Kind.PURCHASE)
    assert (purchase.session, purchase.order_id, purchase.total, purchase.code) == (
        "s-buyer",
        "1042",
        Decimal("89.90"),
        CODE,
    )
    assert purchase.applied
    assert Decision.objects.get(session="s-buyer").converted_at == purchase.at


def test_an_expired_code_is_410_and_unknown_or_another_sites_codes_are_404(
    client: Client, demo_site, shop_key
):
    expired = an_offer(demo_site, code="SAVE10-EXPIRED", session="s-2", expires_in=-1)
    other = Site.objects.create(key="other", name="Other shop")
    elsewhere = an_offer(other, code="SAVE10-ELSEWHERE", session="s-3")
    _, other_key = api_key_create(site=other, name="their server")
    an_offer(demo_site, code="SAVE10-OURS", session="s-4")
    cases = [
        (shop_key, "SAVE10-EXPIRED", 410, "code_expired"),
        (shop_key, "SAVE10-NOSUCHCODE", 404, "unknown_code"),
        (shop_key, "SAVE10-ELSEWHERE", 404, "unknown_code"),  # another shop's code
        (other_key, "SAVE10-OURS", 404, "unknown_code"),  # another shop's key
    ]
    for key, code, status, error in cases:
        answer = redeem_with(client, key, code=code, order_id="1")
        assert (answer.status_code, answer.json()["error"]) == (status, error), code
        assert answer.json()["detail"]
    for offer in (expired, elsewhere):
        offer.refresh_from_db()
        assert offer.redeemed_at is None
    assert not Mark.objects.exists()


@pytest.mark.usefixtures("shop_key")
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer lok_nosuchkey", "Basic dXNlcjpwdw==", "lok_x"],
)
def test_without_a_valid_key_it_is_401(client: Client, demo_site, authorization):
    an_offer(demo_site)
    headers = {} if authorization is None else {"Authorization": authorization}
    body = json.dumps({"code": CODE, "order_id": "1", "total": 1.0})
    answer = client.post("/api/redeem/", body, content_type="application/json", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert answer["WWW-Authenticate"].startswith("Bearer")
    assert Offer.objects.get().redeemed_at is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("", "bad_json"),
        ("{", "bad_json"),
        ("[]", "bad_body"),
        ('{"code": "SAVE10-ABCDEFGHJK", "order_id": "1"}', "bad_body"),  # no total
        ('{"code": "SAVE10-ABCDEFGHJK", "total": 1}', "bad_body"),  # no order
        ('{"order_id": "1", "total": 1}', "bad_body"),
        ('{"code": "SAVE10-ABCDEFGHJK", "order_id": "1", "total": "1.00"}', "bad_body"),
        ('{"code": "SAVE10-ABCDEFGHJK", "order_id": "1", "total": -1}', "bad_body"),
        ('{"code": "SAVE10-ABCDEFGHJK", "order_id": "1", "total": 1e12}', "bad_body"),
        ('{"code": "SAVE10-ABCDEFGHJK", "order_id": "", "total": 1}', "bad_body"),
        ('{"code": "", "order_id": "1", "total": 1}', "bad_body"),
        ('{"code": "SAVE10-ABCDEFGHJK", "order_id": "1", "total": 1, "x": 1}', "bad_body"),
        ('{"code": "SAVE10-ABCDEFGHJK", "order_id": "' + "9" * 129 + '", "total": 1}', "bad_body"),
    ],
)
def test_a_malformed_body_is_400_with_a_clear_error(
    client: Client, demo_site, shop_key, body, error
):
    an_offer(demo_site)
    answer = redeem_with(client, shop_key, body=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == error and answer.json()["detail"]
    assert Offer.objects.get().redeemed_at is None


def test_a_body_over_4_kib_is_413_and_a_get_is_405(client: Client, demo_site, shop_key):
    an_offer(demo_site)
    big = json.dumps({"code": CODE, "order_id": "1", "total": 1, "pad": "x" * 5000})
    assert redeem_with(client, shop_key, body=big).status_code == 413
    got = client.get("/api/redeem/", headers={"Authorization": f"Bearer {shop_key}"})
    assert (got.status_code, got["Allow"], got.json()["error"]) == (
        405,
        "POST",
        "method_not_allowed",
    )


def test_it_needs_no_csrf_token_only_the_key(demo_site, shop_key):
    an_offer(demo_site)
    strict = Client(enforce_csrf_checks=True)
    assert redeem_with(strict, shop_key, code=CODE, order_id="1").status_code == 200


def test_a_key_past_its_rate_gets_429_with_retry_after(
    client: Client, demo_site, shop_key, monkeypatch
):
    monkeypatch.setattr(redeem, "limiter", redeem.KeyLimiter(rate=0.5, burst=2))
    an_offer(demo_site)
    answers = [redeem_with(client, shop_key, code=CODE, order_id="1") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"] == "rate_limited"
    assert answers[2]["Retry-After"] == "2"
    # another key has a bucket of its own
    _, second = api_key_create(site=demo_site, name="second server")
    assert redeem_with(client, second, code=CODE, order_id="1").status_code == 200


def test_the_rate_and_burst_are_settings(settings):
    settings.REDEEM_RATE_PER_SECOND, settings.REDEEM_BURST = 0.25, 3
    limiter = redeem.KeyLimiter()
    assert (limiter.rate, limiter.burst, limiter.retry_after()) == (0.25, 3, 4)
    assert [limiter.take(1, 100.0) for _ in range(4)] == [True, True, True, False]


@pytest.mark.services
def test_in_redis_mode_every_process_takes_from_one_bucket_a_key(own_redis: OwnRedis):
    # Two servers' limiters, with nothing in common but Redis: a key's burst of 5 is shared.
    first, second = (
        redeem.KeyLimiter(rate=0.001, burst=5, redis_url=own_redis.url) for _ in range(2)
    )
    taken = [limiter.take(7, 0.0) for _ in range(5) for limiter in (first, second)]
    assert taken == [True] * 5 + [False] * 5
    # Another key has a bucket of its own; the buckets refill at the rate.
    assert second.take(8, 0.0)
    quick = redeem.KeyLimiter(rate=50.0, burst=1, redis_url=own_redis.url)
    assert quick.take(9, 0.0) and not quick.take(9, 0.0)
    time.sleep(0.1)
    assert quick.take(9, 0.0)


@pytest.mark.services
def test_while_redis_is_down_each_process_limits_on_its_own(tmp_path, caplog):
    server = RedisServer(tmp_path)
    limiter = redeem.KeyLimiter(rate=0.001, burst=2, redis_url=server.url)
    assert [limiter.take(1, 100.0) for _ in range(3)] == [True, True, False]
    server.kill()
    with caplog.at_level(logging.WARNING, logger="offers.redeem"):
        # The process's own bucket, full: redemptions go on, still limited.
        assert [limiter.take(1, 101.0) for _ in range(3)] == [True, True, False]
    warnings = [r.getMessage() for r in caplog.records if r.name == "offers.redeem"]
    assert len(warnings) == 1 and "Redis did not answer" in warnings[0]


# --- one purchase, whichever of its event and its redemption comes first ---------------------


def decision_with_offer() -> DecisionMade:
    made = DecisionMade(
        session_id="s-fast",
        site="demo",
        pause_key="s-fast:1",
        deadline=T0,
        at=T0,
        outcome=Outcome.OFFER,
        risk=0.9,
        shadow_risk=None,
        model="",
        shadow_model="",
        features={},
        cart_value=120.0,
    )
    made.offer = OfferMade("o-fast", "SAVE10-FAST", None, "t", "m", 10, T0, T0 + 1800)
    return made


def purchase_event(session: str, **told: Any) -> MarkMade:
    return MarkMade(session, None, "purchase", T0, **told)


def test_a_purchase_event_and_the_redemption_make_one_purchase_in_either_order(
    client: Client, demo_site, shop_key
):
    an_offer(demo_site, code="SAVE10-FIRSTEVENT", session="s-a")
    an_offer(demo_site, code="SAVE10-FIRSTREDEEM", session="s-b")
    # s-a: the snippet's purchase (without a code) before the shop's redemption
    record_write(records=[purchase_event("s-a", order_id="1", total=90.0)])
    assert redeem_with(client, shop_key, code="SAVE10-FIRSTEVENT", order_id="1").status_code == 200
    # s-b: the redemption first, then the snippet's purchase with the code
    assert redeem_with(client, shop_key, code="SAVE10-FIRSTREDEEM", order_id="2").status_code == 200
    record_write(
        records=[purchase_event("s-b", order_id="2", total=90.0, code="SAVE10-FIRSTREDEEM")]
    )
    purchases = Mark.objects.filter(kind="purchase").order_by("session")
    assert [(m.session, m.order_id, m.total, m.code) for m in purchases] == [
        ("s-a", "1", Decimal("90.00"), "SAVE10-FIRSTEVENT"),
        ("s-b", "2", Decimal("90.00"), "SAVE10-FIRSTREDEEM"),
    ]
    assert Decision.objects.filter(converted_at=None).count() == 0


def test_a_redemption_before_its_decision_is_written_converts_it_once_it_is(
    client: Client, demo_site, shop_key
):
    from offers.services import marks_sweep

    offer = an_offer(demo_site, session="s-early")
    decision = offer.decision
    # the decision's row is written late: here, its purchase comes first
    Decision.objects.filter(pk=decision.pk).update(session="s-written-later")
    assert redeem_with(client, shop_key, code=CODE, order_id="1").status_code == 200
    assert not Mark.objects.get(kind="purchase").applied
    Decision.objects.filter(pk=decision.pk).update(session="s-early")
    assert marks_sweep(now=timezone.now()) == 1
    assert Decision.objects.get(pk=decision.pk).converted_at is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("demo_site")
async def test_a_purchase_events_order_total_and_code_are_recorded(runtime: Runtime):
    buy = event("e-1", "purchase", order_id="D-7", total=199.5, code="save10-abc")
    result = await ingest(
        runtime, session_id="s-event", site="demo", items=[buy], client="c", now=T0
    )
    assert result.acked == ["e-1"]
    recorder = Recorder(runtime.journal)
    assert await recorder.step(T0) is True
    mark = await Mark.objects.aget(kind="purchase")
    assert (mark.session, mark.order_id, mark.total, mark.code) == (
        "s-event",
        "D-7",
        Decimal("199.50"),
        "SAVE10-ABC",
    )


@pytest.mark.parametrize(
    ("model", "written"),
    [
        (Decision, services._DECISION_COLUMNS),
        (Offer, services._OFFER_COLUMNS),
    ],
)
def test_every_column_the_records_fast_insert_leaves_out_has_a_database_default(model, written):
    """The record writes decisions and offers with a column list (COPY on PostgreSQL): a column
    left out of it must be one the database fills in, or the batch fails."""
    from django.db.models import NOT_PROVIDED

    for field in model._meta.concrete_fields:
        if field.primary_key or field.name in written:
            continue
        assert field.null or field.db_default is not NOT_PROVIDED, field.name


def test_the_fast_insert_writes_an_offer_on_its_first_try(demo_site):
    # raises when the database cannot fill in a column left out
    services._decisions_insert([decision_with_offer()], set(), {"demo": demo_site.pk}, {})
    offer = Offer.objects.get()
    assert (offer.code, offer.redeemed_order_id, offer.redeemed_total) == ("SAVE10-FAST", "", None)


def test_a_purchase_journaled_before_it_carried_its_order_is_read_without_one():
    import msgspec

    from streaming.records import decode

    old = msgspec.msgpack.encode(
        ("mark", {"session_id": "s-1", "offer_id": None, "kind": "purchase", "at": T0})
    )
    assert decode(old) == MarkMade("s-1", None, "purchase", T0, order_id="", total=None, code="")


# --- the demo checkout goes the same way -----------------------------------------------------


def order(client: Client, *, code: str = CODE, order_id: str = "D-ABC123", total: str = "200.00"):
    return client.post("/checkout/order/", {"order_id": order_id, "total": total, "code": code})


def test_the_demo_checkout_redeems_like_the_api_and_records_what_was_paid(
    client: Client, demo_site, shop_key
):
    an_offer(demo_site, session="s-demo")
    placed = order(client)
    assert placed.status_code == 200 and placed.json()["total"] == 180.0
    again = order(client)  # the same order placed again (a retried request): no second use
    assert again.status_code == 200 and again.json() == placed.json()
    purchase = Mark.objects.get(kind="purchase")
    assert (purchase.session, purchase.order_id, purchase.total, purchase.code) == (
        "s-demo",
        "D-ABC123",
        Decimal("180.00"),
        CODE,
    )
    # the API and the demo shop share one record of use
    assert redeem_with(client, shop_key, code=CODE, order_id="D-OTHER").status_code == 409
    an_offer(demo_site, code="SAVE10-VIAAPI", session="s-api")
    assert redeem_with(client, shop_key, code="SAVE10-VIAAPI", order_id="1").status_code == 200
    refused = order(client, code="SAVE10-VIAAPI", order_id="D-ABC124")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "That code is already used."


# --- ten orders racing with one code ---------------------------------------------------------


def race(database_url: str) -> dict[str, Any]:
    import subprocess

    env = project_env(DATABASE_URL=database_url, DATABASE_POOL_SIZE="0", RECORD_JOURNAL="off")
    done = subprocess.run(
        [sys.executable, "-m", "tests.offers.redeem_race"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check_one_winner(result: dict[str, Any]) -> None:
    assert result["statuses"] == [200] + [409] * 9
    (purchase,) = result["purchases"]
    assert purchase == {"order_id": result["redeemed_by"], "total": "90.00", "code": "SAVE10-RACE"}
    assert result["converted"] == 1
    assert result["halves"] == [
        {"order_id": "7", "total": "12.50", "code": "C-1", "applied": False}  # no decision
    ]


@pytest.mark.slow
def test_ten_orders_racing_with_one_code_on_sqlite_one_wins(tmp_path):
    check_one_winner(race(f"sqlite:///{tmp_path / 'race.sqlite3'}"))


@pytest.mark.services
def test_ten_orders_racing_with_one_code_on_postgresql_one_wins(postgres_url):  # noqa: F811
    check_one_winner(race(postgres_url))
