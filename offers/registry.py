"""The model registry, watched: every process scores with the registry's active and shadow models,
and the active uplift model.

A worker step (`async def step(now) -> bool`) that reads the registry in a thread, so the event
loop that serves the sockets never waits on the database.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.conf import settings

from offers import metrics
from offers.models import ScoringModel
from streaming.decider import ModelSlot
from streaming.model_file import ModelError
from streaming.scoring import Scorer, load_model
from streaming.uplift_model import UpliftScorer, load_uplift_model

ROLES = ("active", "shadow", "uplift")

log = logging.getLogger(__name__)


class RegistryWatcher:
    """Keeps the slot's scorers equal to the registry's active and shadow models, and its uplift
    scorer equal to the active uplift model.

    Polls every `every` seconds, so an activation from the admin or from another process
    (`train_model --activate`) takes over within about that long, with no restart.
    """

    def __init__(self, slot: ModelSlot, *, every: float = 1.0) -> None:
        self.slot = slot
        self.every = every
        self._next = 0.0
        self._loaded: dict[str, tuple[int, Scorer | UpliftScorer] | None] = dict.fromkeys(ROLES)
        self._failed: dict[int, str] = {}  # model id -> why it could not be loaded
        # the models the registry wants scoring that could not be loaded: an alert each
        self.failing: dict[int, str] = {}

    async def step(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self.every
        wanted = await database_sync_to_async(_registry_state)()
        changed = False
        for role in ROLES:
            changed = await self._sync(role, wanted.get(role)) or changed
        self.failing = {pk: why for pk, why in self._failed.items() if pk in wanted.values()}
        return changed

    async def _sync(self, role: str, model_id: int | None) -> bool:
        loaded = self._loaded[role]
        if (loaded[0] if loaded else None) == model_id:
            return False
        if model_id is None:
            self._set(role, None)
            return True
        if model_id in self._failed:
            return False
        load = _load_uplift if role == "uplift" else _load_scorer
        try:
            scorer: Scorer | UpliftScorer = await database_sync_to_async(load)(model_id)
        except (ModelError, ScoringModel.DoesNotExist) as exc:
            # Keep scoring with the last good model; an operator sees the alert.
            self._failed[model_id] = str(exc)
            metrics.MODEL_LOAD_FAILURES.inc()
            log.error("model %s could not be loaded, keeping the last good one: %s", model_id, exc)
            return False
        self._set(role, (model_id, scorer))
        log.info("now scoring with %s as the %s model", scorer.label, role)
        return True

    def _set(self, role: str, loaded: tuple[int, Scorer | UpliftScorer] | None) -> None:
        self._loaded[role] = loaded
        scorer = loaded[1] if loaded else None
        if role == "uplift":
            self.slot.uplift = scorer if isinstance(scorer, UpliftScorer) else None
            return
        risk = scorer if isinstance(scorer, Scorer) else None
        if role == "active":
            self.slot.active = risk
            metrics.ACTIVE_MODEL.info({"label": risk.label if risk else ""})
        else:
            self.slot.shadow = risk


def _registry_state() -> dict[str, int]:
    rows = ScoringModel.objects.filter(
        state__in=[ScoringModel.State.ACTIVE, ScoringModel.State.SHADOW]
    ).values_list("state", "id")
    wanted = {state: model_id for state, model_id in rows}
    uplift = (
        ScoringModel.uplift_models.filter(state=ScoringModel.State.ACTIVE)
        .values_list("id", flat=True)
        .first()
    )
    if uplift is not None:
        wanted["uplift"] = uplift
    return wanted


def _load_scorer(model_id: int) -> Scorer:
    model = ScoringModel.objects.get(pk=model_id)
    scorer = load_model(bytes(model.artifact), label=model.label)
    if warning := model.pause_warning(settings.PAUSE_SECONDS):
        log.warning("%s", warning)
    return scorer


def _load_uplift(model_id: int) -> UpliftScorer:
    model = ScoringModel.uplift_models.get(pk=model_id)
    return load_uplift_model(bytes(model.artifact), label=model.label)
