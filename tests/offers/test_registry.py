from __future__ import annotations

import pytest

from offers.registry import RegistryWatcher
from offers.services import model_activate, model_create, model_rollback, model_shadow
from streaming.decider import ModelSlot
from streaming.features import FEATURE_NAMES
from tests.factories import T0, stored_model
from tests.hostile_models import deep_model

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_watcher_follows_activation_and_rollback():
    from asgiref.sync import sync_to_async

    first, second = await sync_to_async(stored_model)(1), await sync_to_async(stored_model)(2)
    slot = ModelSlot()
    watcher = RegistryWatcher(slot, every=1.0)
    assert await watcher.step(T0) is False and slot.active is None
    await sync_to_async(model_activate)(model=first)
    assert await watcher.step(T0 + 0.5) is False  # not yet time to look
    assert await watcher.step(T0 + 1) is True
    assert slot.active is not None and slot.active.label == "cart-risk@1"
    await sync_to_async(model_activate)(model=second)
    await watcher.step(T0 + 2)
    assert slot.active.label == "cart-risk@2"
    await sync_to_async(model_shadow)(model=first)
    await watcher.step(T0 + 3)
    assert slot.shadow is not None and slot.shadow.label == "cart-risk@1"
    await sync_to_async(model_shadow)(model=None)
    rolled = await sync_to_async(model_rollback)()
    assert rolled is not None and rolled.label == "cart-risk@1"
    await watcher.step(T0 + 4)
    assert slot.active.label == "cart-risk@1" and slot.shadow is None


@pytest.mark.parametrize("kind", ["corrupt", "deep"])
async def test_a_model_that_cannot_serve_is_refused_and_the_last_good_one_kept(kind):
    from asgiref.sync import sync_to_async

    from offers.models import ScoringModel

    good = await sync_to_async(stored_model)(1)
    await sync_to_async(model_activate)(model=good)
    slot = ModelSlot()
    watcher = RegistryWatcher(slot)
    await watcher.step(T0)
    corrupt = await sync_to_async(model_create)(
        artifact=b"{not a model" if kind == "corrupt" else deep_model(1_000),
        artifact_format="json",
        feature_names=list(FEATURE_NAMES),
        metrics={},
    )
    # model_activate tries a model first and would refuse it: made active behind its back (a
    # version activated before the limits, or a hand-edited row).
    await ScoringModel.objects.filter(pk=corrupt.pk).aupdate(state=ScoringModel.State.ACTIVE)
    await ScoringModel.objects.filter(pk=good.pk).aupdate(state=ScoringModel.State.RETIRED)
    assert await watcher.step(T0 + 1) is False
    assert slot.active is not None and slot.active.label == "cart-risk@1"


async def test_a_model_trained_for_another_pause_is_served_with_a_warning(settings, caplog):
    from asgiref.sync import sync_to_async

    from offers.models import ScoringModel

    settings.PAUSE_SECONDS = 10.0
    model = await sync_to_async(stored_model)(1)
    await ScoringModel.objects.filter(pk=model.pk).aupdate(pause_seconds=30.0)
    await sync_to_async(model_activate)(model=model)
    watcher = RegistryWatcher(ModelSlot())
    with caplog.at_level("WARNING", logger="offers.registry"):
        assert await watcher.step(T0) is True
    assert "trained on 30 s pauses but PAUSE_SECONDS is 10" in caplog.text
    model.pause_seconds = 10.0
    assert model.pause_warning(10.0) == ""
    model.pause_seconds = None  # an uploaded model: not known, no warning
    assert model.pause_warning(10.0) == ""
