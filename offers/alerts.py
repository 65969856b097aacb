"""Alerts: what operators are told rather than left to notice (README.md, "Alerts").

The worker runs `AlertWatch` as a step. Each turn it asks its checks what holds now; a check
answers for one kind of alert with the findings of that kind (one per subject: a model, a
feature, a rule), or None when it cannot tell yet. A finding with no open alert raises one; an
open alert of that kind that is no longer found is resolved. Raised, changed and resolved alerts
go to the dashboards at once and, when `ALERT_WEBHOOK_URL` is set, to the webhook (in a thread of
its own, with bounded retries: a slow or dead receiver never holds up the worker).

In Redis mode every worker runs the step and one of them, holding a lease in Redis, checks.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import IntegrityError, transaction
from django.utils import timezone

from offers import metrics
from offers.models import Alert, DeadRecord, Decision, OfferRule, ScoringModel
from streaming import lua
from streaming.policy import Outcome

if TYPE_CHECKING:
    from offers.registry import RegistryWatcher
    from streaming.redis_client import Client

log = logging.getLogger(__name__)

WARNING, CRITICAL = Alert.Severity.WARNING.value, Alert.Severity.CRITICAL.value

# The kinds, each with its severity and what an operator does about it (README, "Alerts").
KINDS: Final[dict[str, tuple[str, str]]] = {
    "model_load": (CRITICAL, "a model could not be loaded: the last good one scores meanwhile"),
    "drift": (WARNING, "shoppers no longer look like the model's training data (PSI > 0.2)"),
    "live_auc": (WARNING, "the active model ranks live outcomes much worse than in training"),
    "decision_delay": (CRITICAL, "decisions come more than a second after their pause (p99)"),
    "offers_hurt": (CRITICAL, "offered shoppers buy significantly less than the holdout"),
    "budget_spent": (WARNING, "a rule's daily budget is spent: it makes no more offers today"),
    "dead_records": (CRITICAL, "records could not be written and were set aside"),
    "layer_drops": (WARNING, "the channel layer dropped messages (an offer may arrive late)"),
}
PSI_LIMIT: Final = 0.2
AUC_DROP_LIMIT: Final = 0.05
AUC_MIN_OUTCOMES: Final = 200
DELAY_LIMIT_SECONDS: Final = 1.0
DELAY_MIN_DECISIONS: Final = 20
QUIET_SECONDS: Final = 300.0  # drops: resolved after this long without one
LEASE_MS: Final = 30_000
WEBHOOK_TRIES: Final = 4
WEBHOOK_QUEUE: Final = 100
# The channel-layer group of every dashboard socket: its frames and alerts go to it.
GROUP: Final = "dashboard"


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition that holds now: an alert of `kind` about `subject`."""

    kind: str
    subject: str
    message: str

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]


class Check(Protocol):
    kind: str

    def __call__(self, now: float, /) -> list[Finding] | None:
        """What holds now (sync: runs in a thread, may query the database); None: can't tell."""


# --- storing: raise, update, resolve -----------------------------------------------------------
def alerts_settle(kind: str, findings: Sequence[Finding], now: datetime) -> list[tuple[Alert, str]]:
    """Make the open alerts of `kind` match `findings`; returns what changed, each with
    'raised', 'changed' (its message or severity) or 'resolved'."""
    changes: list[tuple[Alert, str]] = []
    with transaction.atomic():
        open_alerts = {
            alert.subject: alert
            for alert in Alert.objects.select_for_update().filter(
                kind=kind, resolved_at__isnull=True
            )
        }
        for finding in findings:
            alert = open_alerts.pop(finding.subject, None)
            if alert is None:
                try:
                    with transaction.atomic():
                        alert = Alert.objects.create(
                            kind=kind,
                            subject=finding.subject,
                            severity=finding.severity,
                            message=finding.message,
                            first_seen=now,
                            last_seen=now,
                        )
                except IntegrityError:  # raised meanwhile by a worker that held the lease before
                    continue
                changes.append((alert, "raised"))
                continue
            changed = (alert.message, alert.severity) != (finding.message, finding.severity)
            alert.message, alert.severity, alert.last_seen = (
                finding.message,
                finding.severity,
                now,
            )
            alert.save(update_fields=["message", "severity", "last_seen"])
            if changed:
                changes.append((alert, "changed"))
        for alert in open_alerts.values():
            alert.resolved_at = now
            alert.save(update_fields=["resolved_at"])
            changes.append((alert, "resolved"))
    return changes


def alert_acknowledge(alert_id: int, user: str, now: datetime | None = None) -> Alert | None:
    """An operator has seen it: it stays open until its condition is gone."""
    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is None:
        return None
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = now or timezone.now(), user
        alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
    return alert


def alerts_listed(limit: int = 200) -> list[Alert]:
    """Open alerts first (newest first), then the latest resolved ones."""
    open_alerts = list(
        Alert.objects.filter(resolved_at__isnull=True).order_by("-last_seen")[:limit]
    )
    resolved = Alert.objects.filter(resolved_at__isnull=False).order_by("-resolved_at")
    return open_alerts + list(resolved[: max(0, limit - len(open_alerts))])


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "subject": alert.subject,
        "severity": alert.severity,
        "message": alert.message,
        "first_seen": _iso(alert.first_seen),
        "last_seen": _iso(alert.last_seen),
        "resolved_at": _iso(alert.resolved_at),
        "acknowledged_at": _iso(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
    }


def alert_message(alert: Alert, change: str) -> dict[str, str]:
    """The channel-layer message that shows `alert` (`change`: raised, resolved, acknowledged…)
    on every dashboard open, sent to `GROUP`."""
    frame = json.dumps({"type": "alert", "change": change, **alert_json(alert)})
    return {"type": "dashboard.frame", "text": frame}


# --- the checks --------------------------------------------------------------------------------
class ModelLoadCheck:
    """Models the registry wants scoring (active or shadow) that this process could not load."""

    kind = "model_load"

    def __init__(self, watcher: RegistryWatcher) -> None:
        self.watcher = watcher

    def __call__(self, _now: float) -> list[Finding] | None:
        failing = dict(self.watcher.failing)  # model id -> why
        labels = dict(
            (pk, f"{name}@{version}")
            for pk, name, version in ScoringModel.every_kind.filter(pk__in=failing).values_list(
                "pk", "name", "version"
            )
        )
        return [
            Finding(
                self.kind,
                labels.get(pk, f"model {pk}"),
                f"{labels.get(pk, f'model {pk}')} could not be loaded ({why}); the last good "
                "model scores meanwhile",
            )
            for pk, why in failing.items()
        ]


class DriftSource(Protocol):
    def latest(self) -> dict[str, Any] | None:
        """{"model", "n", "features": {name: psi}, "score": psi} of the last check, or None."""


class DriftCheck:
    kind = "drift"

    def __init__(self, source: DriftSource) -> None:
        self.source = source

    def __call__(self, _now: float) -> list[Finding] | None:
        result = self.source.latest()
        if not result:
            return None
        model, n = result.get("model", "the active model"), result.get("n", 0)
        against = f"over {n} decisions of the last 24 h against {model}'s training data"
        findings = [
            Finding(self.kind, f"feature:{name}", f"{name} drifted: PSI {psi:.2f} {against}")
            for name, psi in sorted(result.get("features", {}).items())
            if psi is not None and psi > PSI_LIMIT
        ]
        score = result.get("score")
        if score is not None and score > PSI_LIMIT:
            findings.append(
                Finding(self.kind, "score", f"the risk score drifted: PSI {score:.2f} {against}")
            )
        return findings


class Every:
    """Runs a check at most every `seconds`; in between it cannot tell (None)."""

    def __init__(self, check: Check, seconds: float) -> None:
        self.check, self.seconds, self.kind = check, seconds, check.kind
        self._next = 0.0

    def __call__(self, now: float) -> list[Finding] | None:
        if now < self._next:
            return None
        self._next = now + self.seconds
        return self.check(now)


class LiveAucCheck:
    """The active model on its own known outcomes against its training ROC-AUC."""

    kind = "live_auc"

    def __init__(self, outcome_window_seconds: float) -> None:
        self.window = outcome_window_seconds

    def __call__(self, now: float) -> list[Finding] | None:
        from streaming.training import auc

        active = ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE).first()
        trained = active.metrics.get("auc") if active is not None else None
        if active is None or not isinstance(trained, int | float):
            return []
        known_before = datetime.fromtimestamp(now, UTC) - timedelta(seconds=self.window)
        rows = list(
            Decision.objects.filter(
                model=active,
                outcome__in=[Outcome.NO_OFFER, Outcome.HOLDOUT],
                at__lte=known_before,
                risk__isnull=False,
            ).values_list("at", "risk", "converted_at")
        )
        if len(rows) < AUC_MIN_OUTCOMES:
            return []
        import numpy as np

        window = timedelta(seconds=self.window)
        abandoned = np.array(
            [converted is None or converted > at + window for at, _, converted in rows], float
        )
        if abandoned.min() == abandoned.max():
            return []
        live = auc(abandoned, np.array([risk for _, risk, _ in rows], float))
        if live >= trained - AUC_DROP_LIMIT:
            return []
        return [
            Finding(
                self.kind,
                active.label,
                f"{active.label} ranks live outcomes with ROC-AUC {live:.3f} on {len(rows)} "
                f"known outcomes, against {trained:.3f} in training",
            )
        ]


class DelayCheck:
    """Decision delay p99 (pause deadline to decision) of this process since the last check."""

    kind = "decision_delay"

    def __init__(self) -> None:
        self._last: list[float] | None = None

    def __call__(self, _now: float) -> list[Finding] | None:
        buckets = _cumulative_buckets()
        last, self._last = self._last, [count for _, count in buckets]
        if last is None:
            return None
        counts = [count - before for (_, count), before in zip(buckets, last, strict=True)]
        total = counts[-1]
        if total < DELAY_MIN_DECISIONS:
            return None
        # the smallest bucket bound under which 99% of them fell
        p99 = next(
            bound
            for (bound, _), count in zip(buckets, counts, strict=True)
            if count >= 0.99 * total
        )
        if p99 <= DELAY_LIMIT_SECONDS:
            return []
        shown = "over 5 s" if p99 == float("inf") else f"up to {p99:g} s"
        return [
            Finding(
                self.kind,
                "",
                f"decision delay p99 {shown} (limit {DELAY_LIMIT_SECONDS:g} s) over the last "
                f"{int(total)} decisions",
            )
        ]


def _cumulative_buckets() -> list[tuple[float, float]]:
    """(upper bound, decisions at or under it) of the decision-delay histogram, +Inf last."""
    found = []
    for family in metrics.DECISION_DELAY.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                found.append((float(sample.labels["le"]), sample.value))
    return sorted(found)


class OffersHurtCheck:
    """Offered at-risk sessions convert significantly less than the held-out ones."""

    kind = "offers_hurt"

    def __init__(self, conversion: Callable[[], dict[str, Any]]) -> None:
        self.conversion = conversion

    def __call__(self, _now: float) -> list[Finding] | None:
        figures = self.conversion()
        high = figures.get("high")
        if high is None or high >= 0 or not figures.get("verdict", "").startswith("Offers lower"):
            return []
        return [Finding(self.kind, "", figures["verdict"])]


class BudgetCheck:
    """Active rules whose daily budget is spent (offers and holdouts of today, UTC)."""

    kind = "budget_spent"

    def __call__(self, now: float) -> list[Finding] | None:
        midnight = datetime.fromtimestamp(now, UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        findings = []
        for rule in OfferRule.objects.filter(active=True, daily_budget__gt=0):
            used = Decision.objects.filter(
                rule=rule, at__gte=midnight, outcome__in=[Outcome.OFFER, Outcome.HOLDOUT]
            ).count()
            if used >= rule.daily_budget:
                findings.append(
                    Finding(
                        self.kind,
                        f"rule:{rule.pk}",
                        f"rule {rule.pk} ({rule.title}) spent its daily budget of "
                        f"{rule.daily_budget}: no more offers from it until midnight UTC",
                    )
                )
        return findings


class DeadRecordsCheck:
    kind = "dead_records"

    def __call__(self, _now: float) -> list[Finding] | None:
        count = DeadRecord.objects.count()
        if not count:
            return []
        return [
            Finding(
                self.kind,
                "",
                f"{count} record{'s' if count != 1 else ''} could not be written and "
                f"{'were' if count != 1 else 'was'} set aside: see Dead records in the admin",
            )
        ]


class LayerDropsCheck:
    """Messages the channel layer dropped; resolved after QUIET_SECONDS without one."""

    kind = "layer_drops"

    def __init__(self) -> None:
        self._seen: float | None = None
        self._last_drop = float("-inf")
        self._dropped = 0.0

    def __call__(self, now: float) -> list[Finding] | None:
        count = metrics.CHANNEL_LAYER_DROPS._value.get()
        if self._seen is not None and count > self._seen:
            self._last_drop = now
            self._dropped += count - self._seen
        self._seen = count
        if now - self._last_drop >= QUIET_SECONDS:
            self._dropped = 0.0
            return []
        return [
            Finding(
                self.kind,
                "",
                f"the channel layer dropped {int(self._dropped)} messages in the last "
                f"{QUIET_SECONDS / 60:g} minutes (a server's channel was at capacity)",
            )
        ]


# --- the webhook -------------------------------------------------------------------------------
class Webhook:
    """POSTs alerts as JSON to `url` from a thread: bounded queue, bounded retries."""

    def __init__(self, url: str, *, timeout: float = 5.0, backoff: float = 1.0) -> None:
        self.url = url
        self.timeout = timeout
        self.backoff = backoff
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=WEBHOOK_QUEUE)
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: Alert, change: str) -> None:
        body = alert_json(alert) | {"change": change, "text": webhook_text(alert, change)}
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            log.warning("alert webhook: %d alerts waiting, this one is dropped", WEBHOOK_QUEUE)

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            data = json.dumps(body).encode()
            for attempt in range(WEBHOOK_TRIES):
                try:
                    request = urllib.request.Request(
                        self.url, data=data, headers={"Content-Type": "application/json"}
                    )
                    with urllib.request.urlopen(request, timeout=self.timeout) as response:
                        response.read()
                    break
                except Exception as exc:
                    if attempt == WEBHOOK_TRIES - 1:
                        log.warning("alert webhook: giving up on alert %s: %s", body["id"], exc)
                    else:
                        time.sleep(self.backoff * 2**attempt)


def webhook_text(alert: Alert, change: str) -> str:
    prefix = "Resolved" if change == "resolved" else alert.severity.capitalize()
    return f"[Live Offers] {prefix}: {alert.message}"


# --- the worker step ---------------------------------------------------------------------------
class AlertWatch:
    """Every `every` seconds: the checks, the alerts brought in line, the changes sent out."""

    def __init__(
        self,
        checks: Sequence[Check],
        *,
        every: float = 10.0,
        redis: Client | None = None,
        webhook: Webhook | None = None,
    ) -> None:
        self.checks = list(checks)
        self.every = every
        self.webhook = webhook
        self._next = 0.0
        self._redis = redis
        self._me = secrets.token_hex(8)
        self._lead = redis.register_script(lua.script("lead")) if redis is not None else None

    async def step(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self.every
        if self._lead is not None and not await self._lead(
            keys=["lo:alerts:lead"], args=[self._me, LEASE_MS]
        ):
            return False  # another worker checks
        changes = await database_sync_to_async(self.check)(now)
        layer = get_channel_layer()
        for alert, change in changes:
            if layer is not None:
                await layer.group_send(GROUP, alert_message(alert, change))
            if self.webhook is not None and change in ("raised", "resolved"):
                self.webhook.send(alert, change)
        return False

    def check(self, now: float) -> list[tuple[Alert, str]]:
        """Runs every check once (in a thread), and settles each kind it could tell."""
        moment = datetime.fromtimestamp(now, UTC)
        changes = []
        for check in self.checks:
            try:
                findings = check(now)
                if findings is not None:
                    changes.extend(alerts_settle(check.kind, findings, moment))
            except Exception:
                log.exception("alert check %s failed; its alerts stay as they were", check.kind)
        for alert, change in changes:
            log.log(
                logging.INFO if change == "resolved" else logging.WARNING,
                "alert %s (%s): %s",
                change,
                alert.kind,
                alert.message,
            )
        return changes
