"""Writes that span models: keyword-only, typed, named <entity>_<action>."""

from __future__ import annotations

import datetime

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from offers.models import Offer, ScoringModel

MODEL_NAME = "cart-risk"


def model_create(
    *,
    artifact: bytes,
    artifact_format: str,
    feature_names: list[str],
    metrics: dict[str, object],
    name: str = MODEL_NAME,
    notes: str = "",
) -> ScoringModel:
    """Store a new version of a model as a candidate (not yet scoring anything)."""
    with transaction.atomic():
        latest = (
            ScoringModel.objects.select_for_update().filter(name=name).aggregate(Max("version"))
        )
        version = (latest["version__max"] or 0) + 1
        return ScoringModel.objects.create(
            name=name,
            version=version,
            artifact=artifact,
            artifact_format=artifact_format,
            feature_names=feature_names,
            metrics=metrics,
            notes=notes,
        )


@transaction.atomic
def model_activate(*, model: ScoringModel) -> ScoringModel:
    """Make `model` the one every server and worker scores with; the previous one is retired."""
    ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE).exclude(pk=model.pk).update(
        state=ScoringModel.State.RETIRED
    )
    model.state = ScoringModel.State.ACTIVE
    model.activated_at = timezone.now()
    model.save(update_fields=["state", "activated_at"])
    return model


@transaction.atomic
def model_rollback() -> ScoringModel | None:
    """Re-activate the version active before the current one; None when there is none."""
    current = ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE).first()
    earlier = ScoringModel.objects.filter(activated_at__isnull=False)
    if current is not None:
        earlier = earlier.exclude(pk=current.pk)
    previous = earlier.order_by("-activated_at").first()
    if previous is None:
        return None
    return model_activate(model=previous)


@transaction.atomic
def model_shadow(*, model: ScoringModel | None) -> None:
    """Run `model` beside the active one (scored and recorded, never acted on); None stops it."""
    ScoringModel.objects.filter(state=ScoringModel.State.SHADOW).update(
        state=ScoringModel.State.RETIRED
    )
    if model is not None:
        model.state = ScoringModel.State.SHADOW
        model.save(update_fields=["state"])


def offer_redeem(*, code: str, at: datetime.datetime | None = None) -> Offer | None:
    """Use an offer code once: the offer, or None when it is unknown, expired or already used.

    A conditional update, so of two checkouts racing with one code exactly one wins.
    """
    at = at or timezone.now()
    used = Offer.objects.filter(code=code, redeemed_at=None, expires_at__gt=at).update(
        redeemed_at=at
    )
    return Offer.objects.get(code=code) if used else None
