from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import Client

from offers import metrics
from offers.alerts import (
    AlertWatch,
    BudgetCheck,
    DeadRecordsCheck,
    DelayCheck,
    DriftCheck,
    Finding,
    LayerDropsCheck,
    LiveAucCheck,
    ModelLoadCheck,
    OffersHurtCheck,
    Webhook,
    alerts_settle,
)
from offers.models import Alert, DeadRecord, Decision, OfferRule, ScoringModel
from offers.registry import RegistryWatcher
from offers.services import model_activate, model_create
from streaming.decider import ModelSlot
from streaming.features import FEATURE_NAMES
from streaming.policy import Outcome
from tests.conftest import service_missing
from tests.factories import T0, operator_user, stored_model
from tests.webhooks import Receiver, receiving

pytestmark = pytest.mark.django_db(transaction=True)

NOW = dt.datetime.fromtimestamp(T0, dt.UTC)


def drift(kind: str = "drift", subject: str = "feature:cart_value", psi: float = 0.9) -> Finding:
    return Finding(kind, subject, f"cart_value drifted: PSI {psi:.2f}")


def test_a_finding_raises_an_alert_once_updates_it_and_resolves_it_when_gone():
    assert [change for _, change in alerts_settle("drift", [drift()], NOW)] == ["raised"]
    # found again: still one open alert, its last_seen moves, nothing to tell
    later = NOW + dt.timedelta(minutes=1)
    assert alerts_settle("drift", [drift()], later) == []
    alert = Alert.objects.get()
    assert (alert.first_seen, alert.last_seen, alert.severity) == (NOW, later, "warning")
    assert [c for _, c in alerts_settle("drift", [drift(psi=1.5)], later)] == ["changed"]
    # other kinds are left alone by this kind's findings
    alerts_settle("dead_records", [Finding("dead_records", "", "1 record set aside")], later)
    gone = alerts_settle("drift", [], later + dt.timedelta(minutes=1))
    assert [(a.kind, c) for a, c in gone] == [("drift", "resolved")]
    assert Alert.objects.filter(resolved_at__isnull=True).get().kind == "dead_records"
    # raised again after it was resolved: a new alert
    alerts_settle("drift", [drift()], later + dt.timedelta(minutes=2))
    assert Alert.objects.filter(kind="drift").count() == 2


def test_drift_alerts_name_each_feature_past_0_2_and_the_score():
    class Source:
        result: dict[str, Any] | None = None

        def latest(self) -> dict[str, Any] | None:
            return self.result

    source = Source()
    check = DriftCheck(source)
    assert check(T0) is None  # no check yet: can't tell
    source.result = {
        "model": "cart-risk@3",
        "n": 400,
        "features": {"cart_value": 2.3, "hidden": 0.6, "searches": 0.05},
        "score": 0.4,
    }
    found = check(T0)
    assert found is not None
    assert [f.subject for f in found] == ["feature:cart_value", "feature:hidden", "score"]
    assert "cart_value drifted: PSI 2.30 over 400 decisions" in found[0].message


def test_a_model_that_fails_to_load_raises_an_alert_until_another_is_active():
    from asgiref.sync import async_to_sync

    good = stored_model(1)
    model_activate(model=good)
    broken = model_create(
        artifact=b"{not a model",
        artifact_format="json",
        feature_names=list(FEATURE_NAMES),
        metrics={},
    )
    watcher = RegistryWatcher(ModelSlot())
    async_to_sync(watcher.step)(T0)
    check = ModelLoadCheck(watcher)
    assert check(T0) == []
    ScoringModel.objects.filter(pk=broken.pk).update(state=ScoringModel.State.ACTIVE)
    ScoringModel.objects.filter(pk=good.pk).update(state=ScoringModel.State.RETIRED)
    async_to_sync(watcher.step)(T0 + 1)
    assert watcher.slot.active is not None and watcher.slot.active.label == good.label
    found = check(T0 + 1)
    assert found is not None and [f.subject for f in found] == [broken.label]
    assert "could not be loaded" in found[0].message
    ScoringModel.objects.filter(pk=broken.pk).update(state=ScoringModel.State.RETIRED)
    ScoringModel.objects.filter(pk=good.pk).update(state=ScoringModel.State.ACTIVE)
    async_to_sync(watcher.step)(T0 + 2)
    assert check(T0 + 2) == []


def decided(site: Any, i: int, **fields: Any) -> Decision:
    values = {
        "site": site,
        "session": f"s{i}",
        "pause_key": f"s{i}:1",
        "at": NOW,
        "outcome": Outcome.NO_OFFER,
        "risk": 0.5,
        "features": {},
    } | fields
    return Decision.objects.create(**values)


def test_the_live_auc_alert_compares_known_outcomes_with_training(demo_site):
    model = stored_model(1)  # trained ROC-AUC 0.9
    model_activate(model=model)
    check = LiveAucCheck(outcome_window_seconds=1800)
    # the risk says nothing about who bought: live ROC-AUC 0.5
    for i in range(250):
        decided(
            demo_site,
            i,
            model=model,
            risk=0.5,
            converted_at=NOW + dt.timedelta(minutes=5) if i % 2 else None,
        )
    assert check(T0 + 600) == []  # outcomes not known yet
    found = check(T0 + 3600)
    assert found is not None and len(found) == 1
    assert "ROC-AUC 0.500 on 250 known outcomes, against 0.900" in found[0].message


def test_the_budget_alert_names_each_spent_rule(demo_site):
    rule = OfferRule.objects.create(
        site=demo_site, priority=1, min_risk=0.5, discount_percent=10, daily_budget=2
    )
    decided(demo_site, 1, outcome=Outcome.OFFER, rule=rule)
    assert BudgetCheck()(T0) == []
    decided(demo_site, 2, outcome=Outcome.HOLDOUT, rule=rule)
    found = BudgetCheck()(T0)
    assert found is not None and [f.subject for f in found] == [f"rule:{rule.pk}"]
    assert BudgetCheck()(T0 + 86400) == []  # a new day


def test_dead_records_raise_a_critical_alert():
    assert DeadRecordsCheck()(T0) == []
    DeadRecord.objects.create(kind="decision", payload={}, error="boom")
    found = DeadRecordsCheck()(T0)
    assert found is not None and found[0].severity == "critical"
    assert found[0].message.startswith("1 record could not be written")


def test_decision_delay_p99_over_a_second_raises_and_a_fast_spell_resolves():
    check = DelayCheck()
    assert check(T0) is None  # the first look only takes the counts
    for _ in range(50):
        metrics.DECISION_DELAY.observe(0.02)
    assert check(T0 + 10) == []
    for _ in range(30):
        metrics.DECISION_DELAY.observe(1.8)
    found = check(T0 + 20)
    assert found is not None and "p99 up to 2.5 s" in found[0].message
    assert check(T0 + 30) is None  # too few decisions since: can't tell


def test_offers_that_lower_conversion_raise_an_alert():
    figures = {"high": -0.02, "verdict": "Offers lower conversion by 5.0 points (95% CI ...)."}
    found = OffersHurtCheck(lambda: figures)(T0)
    assert found is not None and found[0].message == figures["verdict"]
    assert OffersHurtCheck(lambda: {"high": 0.03, "verdict": "No clear difference yet"})(T0) == []


def test_channel_layer_drops_raise_until_five_quiet_minutes():
    check = LayerDropsCheck()
    assert check(T0) == []
    metrics.CHANNEL_LAYER_DROPS.inc(3)
    found = check(T0 + 10)
    assert found is not None and "dropped 3 messages" in found[0].message
    assert check(T0 + 200) != []
    assert check(T0 + 311) == []


@pytest.fixture
def receiver() -> Iterator[str]:
    with receiving() as url:
        yield url


async def test_the_watch_sends_raised_alerts_to_dashboards_and_the_webhook(receiver: str):
    import asyncio

    Receiver.failures_left = 2  # the receiver fails twice: retried
    layer = get_channel_layer()
    assert layer is not None
    channel = await layer.new_channel()
    await layer.group_add("dashboard", channel)

    class Dead:
        kind = "dead_records"

        def __init__(self) -> None:
            self.count = 1

        def __call__(self, _now: float) -> list[Finding] | None:
            if not self.count:
                return []
            return [Finding(self.kind, "", f"{self.count} record could not be written")]

    check = Dead()
    watch = AlertWatch([check], every=10, webhook=Webhook(receiver, backoff=0.05))
    await watch.step(T0)
    frame = json.loads((await layer.receive(channel))["text"])
    assert (frame["type"], frame["change"], frame["kind"]) == ("alert", "raised", "dead_records")
    await watch.step(T0 + 5)  # not yet its time: nothing checked
    check.count = 0
    await watch.step(T0 + 10)
    frame = json.loads((await layer.receive(channel))["text"])
    assert frame["change"] == "resolved" and frame["resolved_at"] is not None
    for _ in range(100):
        if len(Receiver.received) == 2:
            break
        await asyncio.sleep(0.05)
    assert [r["change"] for r in Receiver.received] == ["raised", "resolved"]
    assert Receiver.received[0]["text"] == "[Live Offers] Critical: 1 record could not be written"
    assert await sync_to_async(Alert.objects.count)() == 1


@pytest.mark.services
async def test_in_redis_mode_one_worker_checks_under_a_lease():
    from redis import asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/11")
    try:
        await client.flushdb()
    except (RedisConnectionError, OSError):
        await client.aclose()
        service_missing("Redis at 127.0.0.1:6379")
    calls: list[str] = []

    def check_of(name: str) -> Any:
        class Named:
            kind = "dead_records"

            def __call__(self, _now: float) -> list[Finding] | None:
                calls.append(name)
                return []

        return Named()

    first = AlertWatch([check_of("first")], redis=client)
    second = AlertWatch([check_of("second")], redis=client)
    await first.step(T0)
    await second.step(T0)
    await first.step(T0 + 10)
    await second.step(T0 + 10)
    assert calls == ["first", "first"]
    await client.flushdb()  # the lease lapses (its holder died)
    await second.step(T0 + 20)
    assert calls[-1] == "second"
    await client.aclose()


def test_the_alerts_api_is_for_operators_and_lists_open_alerts_first():
    alerts_settle("drift", [drift()], NOW)
    alerts_settle("dead_records", [Finding("dead_records", "", "1 record")], NOW)
    alerts_settle("dead_records", [], NOW + dt.timedelta(minutes=1))
    client = Client()
    assert client.get("/api/alerts/").status_code == 403
    client.force_login(operator_user(permission=False))
    assert client.get("/api/alerts/").status_code == 403
    client.force_login(operator_user("ops"))
    alerts = client.get("/api/alerts/").json()["alerts"]
    assert [(a["kind"], a["resolved_at"] is None) for a in alerts] == [
        ("drift", True),
        ("dead_records", False),
    ]
    first = alerts[0]["id"]
    acknowledged = client.post(f"/api/alerts/{first}/acknowledge/").json()
    assert acknowledged["acknowledged_by"] == "ops" and acknowledged["resolved_at"] is None
    assert client.post("/api/alerts/999/acknowledge/").status_code == 404
