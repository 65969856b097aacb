"""Writes that span models: keyword-only, typed, named <entity>_<action>."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.db import DataError, IntegrityError, connection, models, transaction
from django.db.models import Max
from django.utils import timezone

from offers.models import (
    ApiKey,
    DeadRecord,
    Decision,
    Mark,
    ModelEvent,
    Offer,
    OfferRule,
    ScoringModel,
    Site,
)
from streaming.features import FEATURE_NAMES
from streaming.model_trial import trial_model
from streaming.records import DecisionMade, MarkMade, ReasonsMade, Record, kind_of
from streaming.uplift_model import booster_files

MODEL_NAME = "cart-risk"
UPLIFT_MODEL_NAME = "uplift"
_KIND_WORDS: dict[str, str] = {
    ScoringModel.Kind.RISK: "a cart-risk model",
    ScoringModel.Kind.UPLIFT: "an uplift model",
}


def model_create(
    *,
    artifact: bytes,
    artifact_format: str,
    feature_names: list[str],
    metrics: dict[str, object],
    name: str = MODEL_NAME,
    notes: str = "",
    pause_seconds: float | None = None,
    reference: dict[str, Any] | None = None,
    user: str = "",
) -> ScoringModel:
    """Store a new version of a model as a candidate (not yet scoring anything).

    `pause_seconds`: the pause length its training examples were cut at, when known;
    `reference`: its training data in bins (`streaming.drift.reference_of`), to measure drift;
    `user`: who did it, '' for a command.
    """
    with transaction.atomic():
        latest = (
            ScoringModel.objects.select_for_update().filter(name=name).aggregate(Max("version"))
        )
        version = (latest["version__max"] or 0) + 1
        model = ScoringModel.objects.create(
            name=name,
            version=version,
            artifact=artifact,
            artifact_format=artifact_format,
            feature_names=feature_names,
            metrics=metrics,
            notes=notes,
            pause_seconds=pause_seconds,
            reference=reference or {},
        )
        ModelEvent.objects.create(
            model=model, action=ModelEvent.Action.CREATED, user=user, note=notes
        )
        return model


def uplift_model_create(
    *,
    artifact: bytes,
    metrics: dict[str, object],
    notes: str = "",
    pause_seconds: float | None = None,
    user: str = "",
) -> ScoringModel:
    """Store a new version of the uplift model (streaming/uplift_model.py's envelope) as a
    candidate; its versions count on their own, beside the cart-risk model's."""
    with transaction.atomic():
        latest = (
            ScoringModel.every_kind.select_for_update()
            .filter(name=UPLIFT_MODEL_NAME)
            .aggregate(Max("version"))
        )
        model = ScoringModel.every_kind.create(
            name=UPLIFT_MODEL_NAME,
            kind=ScoringModel.Kind.UPLIFT,
            version=(latest["version__max"] or 0) + 1,
            artifact=artifact,
            artifact_format=ScoringModel.Format.JSON,
            feature_names=list(FEATURE_NAMES),
            metrics=metrics,
            notes=notes,
            pause_seconds=pause_seconds,
        )
        ModelEvent.objects.create(
            model=model, action=ModelEvent.Action.CREATED, user=user, note=notes
        )
        return model


def uplift_model_activate(*, model: ScoringModel, user: str = "", note: str = "") -> ScoringModel:
    """Make `model` the uplift model every worker scores with (within a second, by the registry
    watcher); the previous one is retired. Each of its boosters is tried in a process of its own
    first, as a cart-risk model is. No gate here: `uplift_model_refusal` is the gate's rule, for
    the callers that apply it."""
    return _model_make_active(
        model,
        kind=ScoringModel.Kind.UPLIFT,
        action=ModelEvent.Action.ACTIVATED,
        user=user,
        note=note,
    )


def uplift_model_rollback(*, user: str = "") -> ScoringModel | None:
    """Re-activate the uplift model active before the current one (as `model_rollback` does for
    the cart-risk model); None when there is none."""
    previous = uplift_model_rollback_target()
    if previous is None:
        return None
    return _model_make_active(
        previous,
        kind=ScoringModel.Kind.UPLIFT,
        action=ModelEvent.Action.ROLLED_BACK,
        user=user,
        note="",
    )


def uplift_model_rollback_target() -> ScoringModel | None:
    """The uplift model `uplift_model_rollback` would re-activate (None when there is none)."""
    return _rollback_target(ScoringModel.Kind.UPLIFT)


def uplift_model_refusal(*, model: ScoringModel) -> str:
    """Why the gate keeps the uplift `model` from being activated, '' when it may be: its Qini
    coefficient on the held-out randomised decisions of its training (metrics["qini"]) must be
    above 0, the rule of `train_model --uplift --activate`; `--force` and the admin's
    "activate anyway" overrule it."""
    metrics: dict[str, Any] = model.metrics if isinstance(model.metrics, dict) else {}
    qini, held_out = metrics.get("qini"), metrics.get("n_test")
    on = f"on {held_out:,} held-out randomised decisions" if isinstance(held_out, int) else ""
    if isinstance(qini, bool) or not isinstance(qini, int | float) or math.isnan(qini):
        return f"{model.label} has no held-out Qini coefficient: its training measured none"
    if qini > 0:
        return ""
    return (
        f"{model.label}'s Qini coefficient {on or 'held out'} is {qini:.3f}, no better than "
        "offering at random"
    )


def model_activate(*, model: ScoringModel, user: str = "", note: str = "") -> ScoringModel:
    """Make `model` the one every server and worker scores with; the previous one is retired.

    The model is tried first in a process of its own (`streaming.model_trial`): ModelError, and
    nothing changes, when it fails. `user`: who did it, '' for a command; `note`: why, for
    the model's timeline (ModelEvent).
    """
    return _model_make_active(
        model, kind=ScoringModel.Kind.RISK, action=ModelEvent.Action.ACTIVATED, user=user, note=note
    )


def model_promote(*, model: ScoringModel, user: str = "", note: str = "") -> ScoringModel:
    """Make the shadow `model` the active one (as `model_activate`), recorded as promoted."""
    return _model_make_active(
        model, kind=ScoringModel.Kind.RISK, action=ModelEvent.Action.PROMOTED, user=user, note=note
    )


def model_rollback(*, user: str = "") -> ScoringModel | None:
    """Re-activate the version active before the current one; None when there is none.

    No transaction around the trial (model_activate): it takes a second or two, and an open
    transaction would hold SQLite's lock against every writer that long.
    """
    previous = model_rollback_target()
    if previous is None:
        return None
    return _model_make_active(
        previous,
        kind=ScoringModel.Kind.RISK,
        action=ModelEvent.Action.ROLLED_BACK,
        user=user,
        note="",
    )


def model_rollback_target() -> ScoringModel | None:
    """The version `model_rollback` would re-activate: the one activated last before the
    current one (None when there is none)."""
    return _rollback_target(ScoringModel.Kind.RISK)


def _rollback_target(kind: str) -> ScoringModel | None:
    of_kind = ScoringModel.every_kind.filter(kind=kind)
    current = of_kind.filter(state=ScoringModel.State.ACTIVE).first()
    earlier = of_kind.filter(activated_at__isnull=False)
    if current is not None:
        earlier = earlier.exclude(pk=current.pk)
    return earlier.order_by("-activated_at").first()


def _model_trial(model: ScoringModel) -> None:
    """Try `model` in a process of its own (each booster of an uplift model): ModelError when
    it fails."""
    if model.kind == ScoringModel.Kind.UPLIFT:
        for booster in booster_files(bytes(model.artifact)):
            trial_model(booster)
    else:
        trial_model(bytes(model.artifact))


def _model_make_active(
    model: ScoringModel, *, kind: str, action: str, user: str, note: str
) -> ScoringModel:
    """Make `model` the active model of its `kind` (one active cart-risk model, one active
    uplift model), retiring the one it replaces; tried first (`_model_trial`)."""
    if model.kind != kind:
        raise ValueError(f"{model.label} is not {_KIND_WORDS[kind]}")
    _model_trial(model)
    of_kind = ScoringModel.every_kind.filter(kind=kind)
    with transaction.atomic():
        replaced = list(
            of_kind.select_for_update().filter(state=ScoringModel.State.ACTIVE).exclude(pk=model.pk)
        )
        of_kind.filter(pk__in=[r.pk for r in replaced]).update(state=ScoringModel.State.RETIRED)
        model.state = ScoringModel.State.ACTIVE
        model.activated_at = timezone.now()
        model.save(update_fields=["state", "activated_at"])
        previous = ", ".join(r.label for r in replaced)[:80]
        ModelEvent.objects.bulk_create(
            [
                ModelEvent(model=model, action=action, user=user, previous=previous, note=note),
                *(
                    ModelEvent(
                        model=r,
                        action=ModelEvent.Action.RETIRED,
                        user=user,
                        note=f"replaced by {model.label}",
                    )
                    for r in replaced
                ),
            ]
        )
    return model


def model_shadow(*, model: ScoringModel | None, user: str = "", note: str = "") -> None:
    """Run `model` beside the active one (scored and recorded, never acted on); None stops it.

    Tried first like an activation: ModelError, and nothing changes, when it fails. The shadow
    it replaces is retired.
    """
    if model is not None:
        trial_model(bytes(model.artifact))
    with transaction.atomic():
        replaced = ScoringModel.objects.select_for_update().filter(state=ScoringModel.State.SHADOW)
        if model is not None:
            replaced = replaced.exclude(pk=model.pk)
        stopped = list(replaced)
        ScoringModel.objects.filter(pk__in=[r.pk for r in stopped]).update(
            state=ScoringModel.State.RETIRED
        )
        events = [
            ModelEvent(
                model=r,
                action=ModelEvent.Action.UNSHADOWED,
                user=user,
                note=f"replaced by {model.label}" if model is not None else note,
            )
            for r in stopped
        ]
        if model is not None:
            model.state = ScoringModel.State.SHADOW
            model.save(update_fields=["state"])
            previous = ", ".join(r.label for r in stopped)[:80]
            events.append(
                ModelEvent(
                    model=model,
                    action=ModelEvent.Action.SHADOWED,
                    user=user,
                    previous=previous,
                    note=note,
                )
            )
        ModelEvent.objects.bulk_create(events)


class ModelInUse(Exception):
    """The active model cannot be retired: another is activated (or the previous one rolled
    back to) first."""


def model_retire(*, model: ScoringModel, user: str = "", note: str = "") -> bool:
    """Retire a candidate or the shadow model (it stops being scored); False when it was
    retired already. ModelInUse for the active model."""
    with transaction.atomic():
        state = (
            ScoringModel.every_kind.select_for_update()
            .filter(pk=model.pk)
            .values_list("state", flat=True)
            .get()
        )
        if state == ScoringModel.State.ACTIVE:
            active = (
                "active uplift model" if model.kind == ScoringModel.Kind.UPLIFT else "active model"
            )
            raise ModelInUse(f"{model.label} is the {active}: activate another or roll back first")
        if state == ScoringModel.State.RETIRED:
            return False
        ScoringModel.every_kind.filter(pk=model.pk).update(state=ScoringModel.State.RETIRED)
        model.state = ScoringModel.State.RETIRED
        said = ScoringModel.State(state).label.lower()
        ModelEvent.objects.create(
            model=model,
            action=ModelEvent.Action.RETIRED,
            user=user,
            note=f"was {'in ' if state == ScoringModel.State.SHADOW else 'a '}{said}"
            + (f"; {note}" if note else ""),
        )
    return True


def model_refuse(
    *, model: ScoringModel, note: str, compared_with: str = "", user: str = ""
) -> None:
    """Record that the gate kept `model` from replacing `compared_with` (a label), and why; the
    model stays as it is (a candidate)."""
    ModelEvent.objects.create(
        model=model,
        action=ModelEvent.Action.REFUSED,
        user=user,
        previous=compared_with,
        note=note,
    )


class Refusal(StrEnum):
    """Why a code is not redeemed."""

    UNKNOWN = "unknown"  # no such code on this site
    USED = "used"  # redeemed by another order
    EXPIRED = "expired"


class OfferRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"code {refusal}")
        self.refusal = refusal


def offer_redeem(
    *,
    code: str,
    site: str,
    order_id: str,
    total: Decimal,
    at: datetime.datetime | None = None,
) -> Offer:
    """Use an offer code for an order, once, on the site that offered it; OfferRefused (with
    why) when it is unknown there, used by another order, or expired.

    `total` is what the order's shopper paid, after the discount. The same order redeeming the
    same code again gets the same offer (a retried request is no second use). The redemption
    writes the session's purchase (order, total, code) through the record's own path, so the
    session is converted whether its decision is written before or after.

    A conditional update on the offer's row, so of many orders racing with one code exactly
    one wins, on PostgreSQL and SQLite alike.
    """
    if not order_id:
        raise ValueError("an order id is needed: it is what makes a redemption idempotent")
    at = at or timezone.now()
    found = (
        Offer.objects.filter(code=code, decision__site__key=site).values_list("pk", flat=True)
    ).first()
    if found is None:
        raise OfferRefused(Refusal.UNKNOWN)
    # The update comes first in its transaction: on SQLite the transaction then waits for the
    # write lock instead of failing on it; on PostgreSQL the loser waits for the winner's row.
    with transaction.atomic():
        won = Offer.objects.filter(pk=found, redeemed_at=None, expires_at__gt=at).update(
            redeemed_at=at, redeemed_order_id=order_id, redeemed_total=total
        )
        offer = Offer.objects.get(pk=found)
        if won:
            purchase = MarkMade(
                offer.session,
                None,
                "purchase",
                at.timestamp(),
                order_id=order_id,
                total=float(total),
                code=offer.code,
            )
            dead = _marks_write([purchase])
            if dead:
                raise IntegrityError(f"the purchase could not be written: {dead[0][1]}")
    if won or (offer.redeemed_at is not None and offer.redeemed_order_id == order_id):
        return offer
    raise OfferRefused(Refusal.USED if offer.redeemed_at is not None else Refusal.EXPIRED)


def offer_check(*, code: str, site: str, at: datetime.datetime | None = None) -> Offer | None:
    """The offer a code would redeem now on `site` (known there, unused, unexpired), or None:
    reads only, the code stays usable. `offer_redeem` is what uses it."""
    at = at or timezone.now()
    return Offer.objects.filter(
        code=code, decision__site__key=site, redeemed_at=None, expires_at__gt=at
    ).first()


def api_key_create(*, site: Site, name: str) -> tuple[ApiKey, str]:
    """A new API key for `site`, and the key itself: shown once, never stored (only its digest
    and its first characters are)."""
    key = ApiKey(site=site, name=name)
    secret = key.new_secret()
    key.save()
    return key, secret


def api_key_revoke(*, key: ApiKey, at: datetime.datetime | None = None) -> bool:
    """Stop `key` from working, from now on; False when it was already revoked."""
    at = at or timezone.now()
    revoked = ApiKey.objects.filter(pk=key.pk, revoked_at=None).update(revoked_at=at)
    key.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)


# A key's last use is written at most this often: not one write per request.
API_KEY_USE_EVERY = datetime.timedelta(minutes=1)


def api_key_authenticate(*, secret: str, at: datetime.datetime | None = None) -> ApiKey | None:
    """The unrevoked key whose secret this is (with its site), or None."""
    if not secret.startswith(ApiKey.KEY_PREFIX) or len(secret) > 200:
        return None
    key = (
        ApiKey.objects.select_related("site")
        .filter(secret_hash=ApiKey.digest(secret), revoked_at=None)
        .first()
    )
    if key is None:
        return None
    at = at or timezone.now()
    if key.last_used_at is None or at - key.last_used_at >= API_KEY_USE_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=at)
        key.last_used_at = at
    return key


def utc(at: float) -> datetime.datetime:
    """A worker's clock reading (seconds since the epoch) as an aware UTC datetime."""
    return datetime.datetime.fromtimestamp(at, tz=datetime.UTC)


# Errors of one record's data, not of the database: the record is set aside, the others go on.
_RECORD_ERRORS = (IntegrityError, DataError, ValueError, TypeError, KeyError, ArithmeticError)


def record_write(*, records: Sequence[Record]) -> RecordsWritten:
    """Write journal records to the database: decisions with their offers, reasons, marks.

    Idempotent: a decision whose pause is already recorded, or a mark already made, changes
    nothing, so a record handed out twice (a recorder killed before it said done) is written
    once. A record that cannot be written is returned in `dead` (with why), and the others are
    written; a database that is away raises, and nothing of the batch is lost.
    """
    written = RecordsWritten()
    decisions = [r for r in records if isinstance(r, DecisionMade)]
    if decisions:
        written.dead += _decisions_write(decisions)
    reasons = [r for r in records if isinstance(r, ReasonsMade)]
    if reasons:
        # one transaction: a statement run for many rows commits (and syncs the disk) once
        with transaction.atomic():
            written.unmatched += _reasons_write(reasons)
    marks = [r for r in records if isinstance(r, MarkMade)]
    if marks:
        with transaction.atomic():
            written.dead += _marks_write(marks)
    return written


@dataclass
class RecordsWritten:
    # records that could not be written, and why
    dead: list[tuple[Record, str]] = field(default_factory=list)
    # reasons whose decision is not (yet) in the database
    unmatched: list[ReasonsMade] = field(default_factory=list)


def _decisions_write(decisions: Sequence[DecisionMade]) -> list[tuple[Record, str]]:
    keys = [d.pause_key for d in decisions]
    recorded = set(Decision.objects.filter(pause_key__in=keys).values_list("pause_key", flat=True))
    fresh: dict[str, DecisionMade] = {}
    for d in decisions:
        if d.pause_key not in recorded:
            fresh.setdefault(d.pause_key, d)
    if not fresh:
        return []
    todo = list(fresh.values())
    site_ids = dict(Site.objects.filter(key__in={d.site for d in todo}).values_list("key", "id"))
    model_ids = _model_ids({d.model for d in todo if d.model})
    rule_ids = set(
        OfferRule.objects.filter(id__in={d.rule_id for d in todo if d.rule_id}).values_list(
            "id", flat=True
        )
    )
    dead: list[tuple[Record, str]] = []
    good: list[DecisionMade] = []
    for d in todo:
        if d.site not in site_ids:
            dead.append((d, f"site {d.site!r} does not exist (deleted?)"))
        elif abs(d.cart_value) >= _MAX_CART_VALUE:
            dead.append((d, f"cart value {d.cart_value} does not fit the record"))
        else:
            good.append(d)
    try:
        with transaction.atomic():
            _decisions_insert(good, rule_ids, site_ids, model_ids)
    except _RECORD_ERRORS:
        # One of them breaks a constraint (or another recorder wrote one meanwhile): one by one,
        # through the ORM, to find it.
        for d in good:
            try:
                with transaction.atomic():
                    if Decision.objects.filter(pause_key=d.pause_key).exists():
                        continue
                    row = _decision_row(d, site_ids, model_ids, rule_ids)
                    row.save()
                    _offer_create_batch([(d, row)], rule_ids)
            except _RECORD_ERRORS as exc:
                dead.append((d, f"{type(exc).__name__}: {exc}"))
    # Marks and purchases that came before their decisions: applied now.
    sessions = {d.session_id for d in good}
    marks_apply(list(Mark.objects.filter(session__in=sessions)))
    return dead


# The columns a batch of decisions and their offers is written with, in one statement each
# (`executemany`: pipelined on PostgreSQL): the ORM's per-object work cost more than the database's.
_DECISION_COLUMNS = (
    "site",
    "session",
    "pause_key",
    "at",
    "model",
    "model_label",
    "rule",
    "risk",
    "shadow_risk",
    "shadow_model",
    "features",
    "reasons",
    "outcome",
    "why",
    "cart_value",
)
_OFFER_COLUMNS = (
    "decision",
    "public_id",
    "session",
    "rule",
    "code",
    "title",
    "message",
    "discount_percent",
    "created_at",
    "expires_at",
)
_CHUNK = 1000


def _decisions_insert(
    decisions: Sequence[DecisionMade],
    rule_ids: set[int],
    site_ids: dict[str, int],
    model_ids: dict[str, int],
) -> None:
    _insert(
        Decision,
        _DECISION_COLUMNS,
        [
            (
                site_ids[d.site],
                d.session_id,
                d.pause_key,
                utc(d.at),
                model_ids.get(d.model),
                d.model,
                d.rule_id if d.rule_id in rule_ids else None,
                d.risk,
                d.shadow_risk,
                d.shadow_model,
                d.features,
                d.reasons,
                str(d.outcome),
                _why(d),
                _cart_value(d),
            )
            for d in decisions
        ],
    )
    offered = [d for d in decisions if d.offer is not None]
    if not offered:
        return
    ids = _ids_by_pause_key([d.pause_key for d in offered])
    _insert(
        Offer,
        _OFFER_COLUMNS,
        [
            (
                ids[d.pause_key],
                d.offer.offer_id,
                d.session_id,
                d.offer.rule_id if d.offer.rule_id in rule_ids else None,
                d.offer.code,
                d.offer.title,
                d.offer.message,
                d.offer.discount_percent,
                utc(d.offer.created_at),
                utc(d.offer.expires_at),
            )
            for d in offered
            if d.offer is not None
        ],
    )


def _insert(
    model: type[models.Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    ignore_conflicts: bool = False,
) -> None:
    """INSERT `rows` (values of the fields `names`) in one `executemany`, or COPY them on
    PostgreSQL."""
    fields = [_concrete(model, name) for name in names]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    prepared = [
        tuple(
            field.get_db_prep_save(value, connection)
            for field, value in zip(fields, row, strict=True)
        )
        for row in rows
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and not ignore_conflicts:
            # COPY: the rows streamed in one command, the fastest way into PostgreSQL
            raw: Any = cursor.cursor
            copy_sql = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
            with raw.copy(copy_sql) as copy:
                for row in prepared:
                    copy.write_row(row)
        else:
            cursor.executemany(sql, prepared)


def _concrete(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    assert field.column
    return field


def _ids_by_pause_key(keys: Sequence[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        ids.update(Decision.objects.filter(pause_key__in=chunk).values_list("pause_key", "id"))
    return ids


def _cart_value(d: DecisionMade) -> Decimal:
    value = Decimal(str(round(d.cart_value, 2)))
    if abs(value) >= _MAX_CART_VALUE:
        raise DataError(f"cart value {value} does not fit the record")
    return value


def _why(d: DecisionMade) -> str:
    return d.why[:_WHY_LENGTH]


_WHY_LENGTH = _concrete(Decision, "why").max_length or 200


def _reasons_write(reasons: Sequence[ReasonsMade]) -> list[ReasonsMade]:
    by_key = {r.pause_key: r for r in reasons}
    found = set(_ids_by_pause_key(list(by_key)))
    field = _concrete(Decision, "reasons")
    table = connection.ops.quote_name(Decision._meta.db_table)
    sql = f"UPDATE {table} SET reasons = %s WHERE pause_key = %s"
    with connection.cursor() as cursor:
        cursor.executemany(
            sql,
            [
                (field.get_db_prep_save(by_key[key].reasons, connection), key)
                for key in sorted(found)
            ],
        )
    return [r for r in reasons if r.pause_key not in found]


def _marks_write(marks: Sequence[MarkMade]) -> list[tuple[Record, str]]:
    dead: list[tuple[Record, str]] = []
    rows = []
    for m in marks:
        if m.kind not in MARK_KINDS or (m.kind != "purchase" and not m.offer_id):
            dead.append((m, f"not a mark: {m.kind!r} for offer {m.offer_id!r}"))
            continue
        try:
            total = _money(m.total)
        except DataError as exc:
            dead.append((m, str(exc)))
            continue
        rows.append(
            Mark(
                session=m.session_id,
                offer_public_id=m.offer_id or "",
                kind=m.kind,
                at=utc(m.at),
                order_id=m.order_id[:_ORDER_ID_LENGTH],
                total=total,
                code=m.code[:_CODE_LENGTH],
            )
        )
    # One mark of a kind per session and offer: sent again, it changes nothing.
    now = timezone.now()
    _insert(
        Mark,
        (
            "session",
            "offer_public_id",
            "kind",
            "at",
            "recorded_at",
            "applied",
            "order_id",
            "total",
            "code",
        ),
        [
            (r.session, r.offer_public_id, r.kind, r.at, now, False, r.order_id, r.total, r.code)
            for r in rows
        ],
        ignore_conflicts=True,
    )
    _purchases_fill_in([r for r in rows if r.kind == Mark.Kind.PURCHASE])
    sessions = {row.session for row in rows}
    marks_apply(list(Mark.objects.filter(session__in=sessions, applied=False)))
    return dead


_ORDER_ID_LENGTH = _concrete(Mark, "order_id").max_length or 128
_CODE_LENGTH = _concrete(Mark, "code").max_length or 40
_MAX_TOTAL = Decimal(10) ** 12


def _money(total: float | None) -> Decimal | None:
    if total is None:
        return None
    value = Decimal(str(round(total, 2)))
    if not value.is_finite() or abs(value) >= _MAX_TOTAL:
        raise DataError(f"purchase total {total} does not fit the record")
    return value


def _purchases_fill_in(purchases: Sequence[Mark]) -> None:
    """A session's purchase is one mark, made by the first of its purchase event and its
    redemption to arrive: the later one fills in the order, total and code it lacks (rows with
    nothing to fill in are left alone)."""
    quote = connection.ops.quote_name
    table = quote(Mark._meta.db_table)
    # One statement for each set of columns told, run for all the purchases that tell them.
    by_told: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for p in purchases:
        told = {"total": p.total is not None, "order_id": bool(p.order_id), "code": bool(p.code)}
        columns = tuple(column for column, given in told.items() if given)
        if columns:
            values = {"total": p.total, "order_id": p.order_id, "code": p.code}
            by_told.setdefault(columns, []).append(
                (*(values[c] for c in columns), p.session, Mark.Kind.PURCHASE.value)
            )
    with connection.cursor() as cursor:
        for columns, params in by_told.items():
            sets = ", ".join(
                f"{quote(c)} = CASE WHEN {_UNTOLD[c]} THEN %s ELSE {quote(c)} END" for c in columns
            )
            untold = " OR ".join(_UNTOLD[c] for c in columns)
            cursor.executemany(
                f"UPDATE {table} SET {sets} WHERE session = %s AND offer_public_id = '' "
                f"AND kind = %s AND ({untold})",
                params,
            )


# When a purchase's column has not been told yet.
_UNTOLD = {"total": "total IS NULL", "order_id": "order_id = ''", "code": "code = ''"}


MARK_KINDS = frozenset(Mark.Kind.values)
# The offer's column each offer mark sets.
OFFER_MARKS = {
    "offer_shown": "shown_at",
    "offer_accepted": "accepted_at",
    "offer_dismissed": "dismissed_at",
}


def marks_apply(marks: Sequence[Mark]) -> int:
    """Apply marks to what they mark: an offer shown, accepted or dismissed (once, the first
    time), a session's decisions converted by its purchase. A mark whose offer or decision is
    not written yet stays unapplied, for `marks_sweep` or the decision's own write. Returns how
    many were applied now."""
    if not marks:
        return 0
    offer_ids = {m.offer_public_id for m in marks if m.kind != Mark.Kind.PURCHASE}
    offers = {
        o.public_id: o
        for o in Offer.objects.filter(public_id__in=offer_ids).only("id", "public_id", "session")
    }
    buying = {m.session for m in marks if m.kind == Mark.Kind.PURCHASE}
    decided = set(
        Decision.objects.filter(session__in=buying)
        .order_by()
        .values_list("session", flat=True)
        .distinct()
    )
    # Offers, then decisions, then marks, each in primary-key order: two recorders applying
    # overlapping marks lock rows in the same order, and never wait on each other in a cycle.
    offer_marks = sorted(
        (m for m in marks if m.kind != Mark.Kind.PURCHASE),
        key=lambda m: (offers[m.offer_public_id].pk if m.offer_public_id in offers else 0, m.pk),
    )
    purchases = sorted((m for m in marks if m.kind == Mark.Kind.PURCHASE), key=lambda m: m.session)
    applied = []
    with transaction.atomic():
        touched = sorted(
            offers[m.offer_public_id].pk for m in offer_marks if m.offer_public_id in offers
        )
        list(Offer.objects.select_for_update().filter(pk__in=touched).order_by("pk").values("pk"))
        buyers = sorted({m.session for m in purchases} & decided)
        list(
            Decision.objects.select_for_update()
            .filter(session__in=buyers, converted_at=None)
            .order_by("pk")
            .values("pk")
        )
        # One statement a column, each run for many rows (`executemany`): the first mark of a
        # kind is the one kept.
        at = connection.ops.adapt_datetimefield_value
        by_column: dict[str, list[tuple[Any, int]]] = {}
        for m in offer_marks:
            offer = offers.get(m.offer_public_id)
            if offer is None or offer.session != m.session:
                continue
            by_column.setdefault(OFFER_MARKS[m.kind], []).append((at(m.at), offer.pk))
            applied.append(m)
        conversions = []
        for m in purchases:
            if m.session in decided:
                conversions.append((at(m.at), m.session))
                applied.append(m)
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            for column, params in by_column.items():
                cursor.executemany(
                    f"UPDATE {quote(Offer._meta.db_table)} SET {quote(column)} = %s "
                    f"WHERE id = %s AND {quote(column)} IS NULL",
                    params,
                )
            if conversions:
                cursor.executemany(
                    f"UPDATE {quote(Decision._meta.db_table)} SET converted_at = %s "
                    "WHERE session = %s AND converted_at IS NULL",
                    conversions,
                )
        fresh = sorted(m.pk for m in applied if not m.applied)
        list(Mark.objects.select_for_update().filter(pk__in=fresh).order_by("pk").values("pk"))
        Mark.objects.filter(pk__in=fresh).update(applied=True)
    return len(fresh)


def marks_sweep(*, now: datetime.datetime, limit: int = 2000) -> int:
    """Apply again the marks of the last hour still waiting for their decision, and the last
    two minutes' purchases (a decision written at the same moment by another process may have
    missed them). Returns how many were applied."""
    waiting = Mark.objects.filter(applied=False, recorded_at__gte=now - datetime.timedelta(hours=1))
    recent = Mark.objects.filter(
        kind=Mark.Kind.PURCHASE,
        recorded_at__gte=now - datetime.timedelta(minutes=2),
        # only those a decision still waits for: the others have nothing left to do
        session__in=Decision.objects.filter(converted_at=None).values("session"),
    )
    marks = {m.pk: m for m in waiting.order_by("id")[:limit]}
    marks.update({m.pk: m for m in recent.order_by("id")[:limit]})
    return marks_apply(list(marks.values()))


def record_set_aside(*, rows: Sequence[tuple[str, dict[str, Any], str]]) -> None:
    """Keep records that could not be written (kind, fields, why) in the dead-letter table."""
    DeadRecord.objects.bulk_create(
        [
            DeadRecord(kind=kind, payload=payload, error=error[:2000])
            for kind, payload, error in rows
        ]
    )


def decision_record_batch(*, decisions: Sequence[DecisionMade]) -> None:
    """Write decisions and their offers (a batch of `record_write`); raises when one cannot be."""
    written = record_write(records=decisions)
    if written.dead:
        record, error = written.dead[0]
        raise IntegrityError(f"{kind_of(record)} could not be written: {error}")


def _model_ids(labels: set[str]) -> dict[str, int]:
    found = {}
    for label in labels:
        name, _, version = label.rpartition("@")
        if name and version.isdigit():
            model = ScoringModel.objects.filter(name=name, version=int(version)).only("id").first()
            if model:
                found[label] = model.pk
    return found


def _decision_row(
    d: DecisionMade, site_ids: dict[str, int], model_ids: dict[str, int], rule_ids: set[int]
) -> Decision:
    row = Decision(
        site_id=site_ids[d.site],
        session=d.session_id,
        pause_key=d.pause_key,
        at=utc(d.at),
        model_id=model_ids.get(d.model),
        model_label=d.model,
        rule_id=d.rule_id if d.rule_id in rule_ids else None,
        risk=d.risk,
        shadow_risk=d.shadow_risk,
        shadow_model=d.shadow_model,
        features=d.features,
        reasons=d.reasons,
        outcome=d.outcome,
        why=_why(d),
        cart_value=Decimal(str(round(d.cart_value, 2))),
    )
    if abs(row.cart_value) >= _MAX_CART_VALUE:
        raise ValueError(f"cart value {row.cart_value} does not fit the record")
    return row


_MAX_CART_VALUE = Decimal(10) ** 12


def _offer_create_batch(pairs: Sequence[tuple[DecisionMade, Decision]], rule_ids: set[int]) -> None:
    offers = [
        Offer(
            decision=row,
            public_id=d.offer.offer_id,
            session=d.session_id,
            rule_id=d.offer.rule_id if d.offer.rule_id in rule_ids else None,
            code=d.offer.code,
            title=d.offer.title,
            message=d.offer.message,
            discount_percent=d.offer.discount_percent,
            created_at=utc(d.offer.created_at),
            expires_at=utc(d.offer.expires_at),
        )
        for d, row in pairs
        if d.offer is not None
    ]
    if offers:
        Offer.objects.bulk_create(offers)
