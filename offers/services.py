"""Writes that span models: keyword-only, typed, named <entity>_<action>."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from offers.models import Decision, Offer, ScoringModel, Site
from streaming.decider import DecisionMade

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


def utc(at: float) -> datetime.datetime:
    """A worker's clock reading (seconds since the epoch) as an aware UTC datetime."""
    return datetime.datetime.fromtimestamp(at, tz=datetime.UTC)


def decision_record_batch(*, decisions: Sequence[DecisionMade]) -> None:
    """Write decisions and their offers, one row a pause.

    One bulk insert; when a pause is already recorded (a retry after a partial failure), one by
    one, skipping what is there, so that each pause keeps exactly one decision.
    """
    site_ids = dict(
        Site.objects.filter(key__in={d.site for d in decisions}).values_list("key", "id")
    )
    model_ids = _model_ids({d.model for d in decisions if d.model})
    rows = [_decision_row(d, site_ids, model_ids) for d in decisions]
    try:
        with transaction.atomic():
            Decision.objects.bulk_create(rows)
            _offer_create_batch(decisions, rows)
    except IntegrityError:
        for decision, row in zip(decisions, rows, strict=True):
            row.pk = None
            with transaction.atomic():
                if Decision.objects.filter(pause_key=decision.pause_key).exists():
                    continue
                row.save()
                _offer_create_batch([decision], [row])


def _model_ids(labels: set[str]) -> dict[str, int]:
    found = {}
    for label in labels:
        name, _, version = label.rpartition("@")
        if name and version.isdigit():
            model = ScoringModel.objects.filter(name=name, version=int(version)).only("id").first()
            if model:
                found[label] = model.pk
    return found


def _decision_row(d: DecisionMade, site_ids: dict[str, int], model_ids: dict[str, int]) -> Decision:
    return Decision(
        site_id=site_ids[d.site],
        session=d.session_id,
        pause_key=d.pause_key,
        at=utc(d.at),
        model_id=model_ids.get(d.model),
        model_label=d.model,
        risk=d.risk,
        shadow_risk=d.shadow_risk,
        shadow_model=d.shadow_model,
        features=d.features,
        reasons=d.reasons,
        outcome=d.outcome,
        cart_value=Decimal(str(round(d.cart_value, 2))),
    )


def _offer_create_batch(decisions: Sequence[DecisionMade], rows: Sequence[Decision]) -> None:
    offers = [
        Offer(
            decision=row,
            public_id=d.offer.offer_id,
            session=d.session_id,
            rule_id=d.offer.rule_id,
            code=d.offer.code,
            title=d.offer.title,
            message=d.offer.message,
            discount_percent=d.offer.discount_percent,
            created_at=utc(d.offer.created_at),
            expires_at=utc(d.offer.expires_at),
        )
        for d, row in zip(decisions, rows, strict=True)
        if d.offer is not None
    ]
    if offers:
        Offer.objects.bulk_create(offers)


OFFER_MARKS = {
    "offer_shown": "shown_at",
    "offer_accepted": "accepted_at",
    "offer_dismissed": "dismissed_at",
}


def offer_mark(*, session_id: str, offer_id: str, kind: str, at: datetime.datetime) -> bool:
    """Mark a session's offer shown, accepted or dismissed, once; False when it is not written yet.

    True too when it was marked before. Not `offers.exists()` for "nothing to mark": an offer its
    worker writes between the two queries would pass for marked, and the mark be lost.
    """
    field = OFFER_MARKS[kind]
    offers = Offer.objects.filter(public_id=offer_id, session=session_id)
    if offers.filter(**{f"{field}__isnull": True}).update(**{field: at}):
        return True
    return offers.filter(**{f"{field}__isnull": False}).exists()


def session_convert(*, session_id: str, at: datetime.datetime) -> int:
    """A purchase: the session's decisions not yet converted are, as of `at`; how many."""
    return Decision.objects.filter(session=session_id, converted_at=None).update(converted_at=at)
