from __future__ import annotations

import datetime
import math
import time

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from prometheus_client import REGISTRY

from offers import drift
from offers.drift import DriftWatch
from offers.evaluation import score
from offers.models import Decision, ScoringModel
from offers.runtime import get_runtime
from streaming.features import FEATURE_NAMES
from tests.offers.outcomes import record_outcomes, registered

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600.0


def feature_psi(feature: str) -> float | None:
    return REGISTRY.get_sample_value("liveoffers_feature_psi", {"feature": feature})


def score_psi() -> float | None:
    return REGISTRY.get_sample_value("liveoffers_score_psi")


@sync_to_async
def decided_today(site, count: int, *, dearer: bool = False, scored: bool = True) -> ScoringModel:
    """An active model, and `count` decisions of the last hours on shoppers like those it learnt
    from (their carts ten times dearer when `dearer`), risks by it when `scored`."""
    model = registered(rounds=30, state=ScoringModel.State.ACTIVE)
    decisions = record_outcomes(site, count, seed=1, age=datetime.timedelta(hours=1))
    if dearer:
        for d in decisions:
            d.features["cart_value"] *= 10
    X = np.asarray([[d.features[name] for name in FEATURE_NAMES] for d in decisions], np.float32)
    for d, risk in zip(decisions, score(model, X), strict=True):
        d.risk, d.model = (float(risk), model) if scored else (0.5, None)
    Decision.objects.bulk_update(decisions, ["features", "risk", "model"])
    return model


async def test_it_exports_the_psi_of_each_feature_and_of_the_score(demo_site):
    model = await decided_today(demo_site, 200)
    watch = DriftWatch(every=HOUR)
    assert await watch.step(time.time()) is True
    latest = watch.latest()
    assert latest is not None
    assert (latest["model"], latest["n"]) == (model.label, 200)
    assert set(latest["features"]) == set(FEATURE_NAMES)
    assert max(latest["features"].values()) < 0.2  # the shoppers it learnt from
    assert latest["score"] is not None and latest["score"] < 0.2
    datetime.datetime.fromisoformat(latest["at"])
    assert feature_psi("cart_value") == latest["features"]["cart_value"]
    assert feature_psi("hidden") == latest["features"]["hidden"]
    assert score_psi() == latest["score"]
    assert watch.result is not None and watch.result.model == model.label


async def test_carts_ten_times_dearer_show_on_cart_value(demo_site):
    await decided_today(demo_site, 200, dearer=True)
    watch = DriftWatch(every=HOUR)
    await watch.step(time.time())
    latest = watch.latest()
    assert latest is not None and latest["features"]["cart_value"] > 0.2
    assert (feature_psi("cart_value") or 0.0) > 0.2
    assert latest["features"]["searches"] < 0.2


async def test_too_few_decisions_tell_nothing(demo_site):
    await decided_today(demo_site, 40)
    watch = DriftWatch(every=HOUR)
    assert await watch.step(time.time()) is False
    assert watch.latest() is None
    assert feature_psi("cart_value") is None
    assert math.isnan(score_psi() or 0.0)


async def test_risks_of_another_model_are_no_score_drift(demo_site):
    await decided_today(demo_site, 100, scored=False)
    watch = DriftWatch(every=HOUR)
    await watch.step(time.time())
    latest = watch.latest()
    assert latest is not None and latest["score"] is None and latest["n"] == 100
    assert math.isnan(score_psi() or 0.0)


async def test_decisions_older_than_a_day_are_left_out(demo_site):
    await decided_today(demo_site, 100)
    watch = DriftWatch(every=HOUR)
    assert await watch.step(time.time() + 30 * HOUR) is False
    assert watch.latest() is None


async def test_it_measures_once_every_period(demo_site):
    await decided_today(demo_site, 100)
    watch = DriftWatch(every=HOUR)
    now = time.time()
    assert await watch.step(now) is True
    first = watch.result
    assert await watch.step(now + 60) is False and watch.result is first
    assert await watch.step(now + HOUR) is True and watch.result is not first


async def test_a_busy_day_is_sampled_evenly(demo_site, monkeypatch):
    monkeypatch.setattr(drift, "MAX_ROWS", 100)
    await decided_today(demo_site, 300)
    watch = DriftWatch(every=HOUR)
    await watch.step(time.time())
    latest = watch.latest()
    assert latest is not None and 90 <= latest["n"] <= 110


async def test_without_an_active_model_there_is_nothing_to_measure():
    watch = DriftWatch(every=HOUR)
    assert await watch.step(time.time()) is False
    assert watch.latest() is None


def test_the_worker_runs_the_drift_step(settings):
    runtime = get_runtime()
    assert isinstance(runtime.drift, DriftWatch)
    assert runtime.drift.every == settings.DRIFT_CHECK_SECONDS
    assert any(getattr(step, "step", None) == runtime.drift.step for step in runtime.worker.steps)
