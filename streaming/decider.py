"""The decision step: paused carts → features → risk → policy → offers, exactly once per pause.

Each decision is put in the journal, stored with its pause, before its offer goes out, so that
every code a browser sees is on its way to the database. The reasons (exact TreeSHAP, the costly
part) are worked out afterwards in the background and follow their decisions into the journal, so
they never delay an offer frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from streaming.budget import Budget
from streaming.delivery import Delivery
from streaming.features import as_dicts, features_of, session_numbers
from streaming.journal import Journal
from streaming.policy import (
    HOLDOUT,
    NO_OFFER,
    Outcome,
    Rule,
    Verdicts,
    decide,
    new_offer_code,
    new_offer_id,
    offer_expires_at,
)
from streaming.records import DecisionMade, OfferMade, ReasonsMade
from streaming.scoring import Scorer
from streaming.state import CART_VALUE, HOLDOUT_BUCKET, LAST_ACTIVITY, LAST_OFFER_AT, SessionState
from streaming.store import OfferNote, SessionStore, Settled
from streaming.uplift_model import UpliftScorer

log = logging.getLogger(__name__)

# Below this many rows, predicting inline is cheaper than a hop to a thread.
_THREAD_ROWS = 64
# Reasons are worked out this many rows at a time (about 10 ms), and not when a pause falls due
# within this many seconds.
_EXPLAIN_CHUNK = 32
_EXPLAIN_MARGIN = 0.02


@dataclass(slots=True)
class _Unexplained:
    """A batch of decisions whose offers went out and whose reasons are still to come."""

    scorer: Scorer
    matrix: npt.NDArray[np.float32]
    decisions: list[DecisionMade]
    explained: list[int]  # rows of offer and holdout decisions
    at: float
    next: int = 0

    @property
    def done(self) -> bool:
        return self.next >= len(self.explained)


@dataclass
class ModelSlot:
    """The scorers in use; swapped whole by whoever watches the model registry."""

    active: Scorer | None = None
    shadow: Scorer | None = None
    uplift: UpliftScorer | None = None


OnDecided = Callable[[list[DecisionMade]], Awaitable[None]]


def iso_utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class Decider:
    def __init__(
        self,
        *,
        store: SessionStore,
        delivery: Delivery,
        models: ModelSlot,
        rules: Callable[[], Sequence[Rule]],
        budget: Budget,
        journal: Journal,
        record: OnDecided,
        pause_seconds: float,
        cooldown_seconds: float,
        holdout_percent: float,
        batch_size: int = 5000,
        explain_within: float = 1.0,
        backlog_limit: int = 50_000,
        on_held_back: Callable[[], None] | None = None,
        on_decided: OnDecided | None = None,
        clock: Callable[[], float] = time.time,
        margins: Callable[[], Mapping[str, float]] = dict,
        explore_percent: float = 0.0,
    ) -> None:
        self.clock = clock
        # site key -> gross margin (a fraction), for rules that target by uplift
        self.margins = margins
        self.explore_percent = explore_percent
        self.store = store
        self.delivery = delivery
        self.models = models
        self.rules = rules
        self.budget = budget
        self.journal = journal
        self.record = record
        self.backlog_limit = backlog_limit
        self.on_held_back = on_held_back
        # Told of each batch as soon as its offers are out, before its reasons (the live feed).
        self.on_decided = on_decided
        self.pause_seconds = pause_seconds
        self.cooldown_seconds = cooldown_seconds
        self.holdout_percent = holdout_percent
        self.batch_size = batch_size
        self.explain_within = explain_within
        self._unexplained: deque[_Unexplained] = deque()

    async def step(self, now: float) -> bool:
        """Decide every pause that is due; returns whether there were any.

        Each decision goes into the journal, stored with its pause, before its offer is sent: a
        code that reaches a browser is always on its way to the database. While the journal
        holds more than `backlog_limit` records (the database is away or slow), no pause is
        claimed: pauses wait, and memory does not grow.
        """
        if self.journal.waiting() > self.backlog_limit:
            if self.on_held_back is not None:
                self.on_held_back()
            return False
        states = await self.store.claim_due(now, self.batch_size)
        if not states:
            return False
        active, shadow = self.models.active, self.models.shadow
        rules = self.rules()
        # the uplift model scores only while a rule targets by uplift
        uplift = self.models.uplift if any(rule.by_uplift for rule in rules) else None
        # (n, NUMBERS) float64: what each paused session holds; (n, F) float32: its features
        numbers = session_numbers(states)
        matrix = features_of(numbers, now)
        # (n,) risks from the active model, or None without one; (n,) chances to buy with an
        # offer and without, or None: one hop to a thread for both models
        risks, chances = await _predict_both(active, uplift, matrix)
        shadow_risks = await _predict(shadow, matrix)
        resumed = resumed_pauses(numbers, self.pause_seconds)
        verdicts = decide_batch(
            states,
            numbers,
            risks,
            rules=rules,
            used_today=self.budget.used(now),
            now=now,
            cooldown_seconds=self.cooldown_seconds,
            holdout_percent=self.holdout_percent,
            resumed=resumed,
            chances=chances,
            margins=self.margins(),
            explore_percent=self.explore_percent,
        )
        if verdicts.spent:
            # Other workers spend the same budgets: what this batch may spend has the last word.
            limits = {rule.id: rule.daily_budget for rule in rules}
            verdicts.keep_within(await self.budget.reserve(verdicts.spent, limits, now))
        # one decision a session; stored with their pauses (one call), then the offers sent
        # (one call): a shared store and a channel layer are a round trip a batch, not one a
        # decision
        rows = as_dicts(matrix)
        whys = verdicts.whys()
        risk_of = [None] * len(states) if risks is None else risks.tolist()
        shadow_of = [None] * len(states) if shadow_risks is None else shadow_risks.tolist()
        decisions: list[DecisionMade] = []
        settled: list[Settled] = []
        frames: list[str | None] = []
        for i, state in enumerate(states):
            made = self._made(state, now, rows[i], risk_of[i], shadow_of[i])
            made.why = whys[i]
            decisions.append(made)
            note: OfferNote | None
            if resumed[i]:
                frame, note = self._resume(made, state), None
            else:
                frame, note = self._act(made, verdicts.outcome[i], verdicts.rule_of(i))
            settled.append(Settled(made, state.activity_seq, note, sends=frame is not None))
            frames.append(frame)
        stored = await self.store.settle(settled, self.journal)
        kept = [d for d, ok in zip(decisions, stored, strict=True) if ok]
        if len(kept) < len(decisions):
            log.warning(
                "%d pauses were taken over by another worker before they were stored; "
                "that worker decides them",
                len(decisions) - len(kept),
            )
        out = [
            (d.session_id, frame)
            for d, frame, ok in zip(decisions, frames, stored, strict=True)
            if ok and frame is not None
        ]
        try:
            await self.delivery.deliver_many(out)
        except Exception:
            # The offers are in the journal and on their sessions (shown again on reconnect).
            log.exception("could not deliver %d offers; they are recorded all the same", len(out))
        sent_at = self.clock()
        for d, frame, ok in zip(decisions, frames, stored, strict=True):
            if ok and frame is not None:
                d.sent_at = sent_at
        # sent: the pauses kept for a resend are done with
        await self.store.release(
            [item for item, ok in zip(settled, stored, strict=True) if ok and item.sends]
        )
        if self.on_decided is not None and kept:
            try:
                await self.on_decided(kept)
            except Exception:
                log.exception("could not tell the feed of %d decisions", len(kept))
        explained = [i for i, d in enumerate(kept) if d.outcome != Outcome.NO_OFFER]
        if active is None or not explained:
            await self.record(kept)
        else:
            kept_rows = [i for i, ok in enumerate(stored) if ok]
            self._unexplained.append(_Unexplained(active, matrix[kept_rows], kept, explained, now))
        return True

    async def explain(self, now: float) -> bool:
        """Work out the reasons of decided offers and holdouts, a chunk at a time, then record.

        TreeSHAP costs about ten decisions a row, and it runs on the same core as the loop that
        sends offers: so a chunk is explained only when no pause falls due in the next moment,
        or when the oldest unexplained batch has waited `explain_within` seconds.
        """
        if not self._unexplained:
            return False
        oldest = self._unexplained[0]
        due = self.store.next_deadline()
        if (
            due is not None
            and due <= now + _EXPLAIN_MARGIN
            and now - oldest.at < self.explain_within
        ):
            return False
        await self._explain_chunk(oldest)
        if oldest.done:
            self._unexplained.popleft()
            await self._explained(oldest)
        return True

    async def _explained(self, batch: _Unexplained) -> None:
        """The reasons of a batch, into the record after its decisions; then the feed."""
        await self.journal.append(
            [
                ReasonsMade(batch.decisions[i].pause_key, batch.decisions[i].reasons)
                for i in batch.explained
                if batch.decisions[i].reasons
            ]
        )
        await self.record(batch.decisions)

    async def _explain_chunk(self, batch: _Unexplained) -> None:
        rows = batch.explained[batch.next : batch.next + _EXPLAIN_CHUNK]
        batch.next += len(rows)
        try:
            reasons = await asyncio.to_thread(batch.scorer.reasons, batch.matrix[rows])
        except Exception:
            log.exception("could not compute reasons; recording the decisions without them")
            return
        for i, top in zip(rows, reasons, strict=True):
            batch.decisions[i].reasons = [
                {"feature": r.feature, "value": r.value, "contribution": r.contribution}
                for r in top
            ]

    def _made(
        self,
        state: SessionState,
        now: float,
        features: dict[str, float],
        risk: float | None,
        shadow_risk: float | None,
    ) -> DecisionMade:
        """The decision as `no_offer`, until `_act` or `_resume` says otherwise."""
        return DecisionMade(
            session_id=state.session_id,
            site=state.site,
            pause_key=state.pause_key,
            deadline=state.last_activity + self.pause_seconds,
            at=now,
            outcome=Outcome.NO_OFFER,
            risk=risk,
            shadow_risk=shadow_risk,
            model=self.models.active.label if self.models.active else "",
            shadow_model=self.models.shadow.label if self.models.shadow else "",
            features=features,
            cart_value=state.cart_value,
        )

    def _act(
        self, decision: DecisionMade, outcome: int, rule: Rule | None
    ) -> tuple[str | None, OfferNote | None]:
        """Carry out the policy's verdict: a holdout, or an offer; returns the frame to send and
        what to note on the session."""
        if rule is None or outcome == NO_OFFER:
            return None, None
        now = decision.at
        decision.rule_id = rule.id
        if outcome == HOLDOUT:
            decision.outcome = Outcome.HOLDOUT
            return None, OfferNote(decision.session_id, now)
        decision.outcome = Outcome.OFFER
        offer = OfferMade(
            offer_id=new_offer_id(),
            code=new_offer_code(rule.discount_percent),
            rule_id=rule.id,
            title=rule.title,
            message=rule.message,
            discount_percent=rule.discount_percent,
            created_at=now,
            expires_at=offer_expires_at(now, rule),
        )
        decision.offer = offer
        frame = offer_frame(offer)
        return frame, OfferNote(decision.session_id, now, offer.offer_id, frame, offer.expires_at)

    def _resume(self, decision: DecisionMade, state: SessionState) -> str | None:
        """What a worker that died decided for this pause; returns its offer's frame, to send
        again."""
        frame = state.offer_frame
        decision.at = state.last_offer_at or decision.at
        decision.outcome = Outcome.OFFER if frame else Outcome.HOLDOUT
        if frame:
            sent = msgspec.json.decode(frame)
            decision.risk = sent.get("risk", decision.risk)
            decision.model = sent.get("model", decision.model)
            decision.offer = OfferMade(
                offer_id=sent["offer_id"],
                code=sent["code"],
                rule_id=None,
                title=sent["title"],
                message=sent["message"],
                discount_percent=sent["discount_percent"],
                created_at=decision.at,
                expires_at=state.offer_expires_at,
            )
        return frame

    async def drain(self) -> None:
        """Explain and record everything decided so far, now (at shutdown, and in tests)."""
        while self._unexplained:
            batch = self._unexplained[0]
            while not batch.done:
                await self._explain_chunk(batch)
            self._unexplained.popleft()
            await self._explained(batch)


def resumed_pauses(numbers: npt.NDArray[np.float64], pause_seconds: float) -> npt.NDArray[np.bool_]:
    """Rows whose last offer or holdout is this pause's own: decided before (by a worker of an
    earlier version that died before recording it), so what was decided is recorded and its
    offer sent again, rather than deciding afresh. (A pause's decision is now stored with the
    pause in one step, which leaves nothing to resume.)"""
    return numbers[:, LAST_OFFER_AT] >= numbers[:, LAST_ACTIVITY] + pause_seconds


def decide_batch(
    states: Sequence[SessionState],
    numbers: npt.NDArray[np.float64],
    risks: npt.NDArray[np.float64] | None,
    *,
    rules: Sequence[Rule],
    used_today: Mapping[int, int],
    now: float,
    cooldown_seconds: float,
    holdout_percent: float,
    resumed: npt.NDArray[np.bool_],
    chances: Chances | None = None,
    margins: Mapping[str, float] | None = None,
    explore_percent: float = 0.0,
) -> Verdicts:
    """`policy.decide` on a claimed batch: its sessions' numbers (`session_numbers`), risks and
    chances to buy with an offer and without (`UpliftScorer.predict`)."""
    p_offer, p_none = chances if chances is not None else (None, None)
    return decide(
        risks=risks,
        sites=[state.site for state in states],
        cart_values=numbers[:, CART_VALUE],
        last_offer_at=numbers[:, LAST_OFFER_AT],
        holdout_buckets=numbers[:, HOLDOUT_BUCKET],
        rules=rules,
        used_today=used_today,
        now=now,
        cooldown_seconds=cooldown_seconds,
        holdout_percent=holdout_percent,
        skip=resumed,
        p_offer=p_offer,
        p_none=p_none,
        margins=margins,
        explore_percent=explore_percent,
    )


def offer_frame(offer: OfferMade) -> str:
    """What the shopper's page gets: the offer, and nothing of how it was decided (no risk, no
    model), which would tell a scripted client how to farm codes."""
    return msgspec.json.encode(
        {
            "type": "offer",
            "offer_id": offer.offer_id,
            "code": offer.code,
            "title": offer.title,
            "message": offer.message,
            "discount_percent": offer.discount_percent,
            "expires_at": iso_utc(offer.expires_at),
        }
    ).decode()


Chances = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]  # (p_offer, p_none)


def score_both(
    active: Scorer | None, uplift: UpliftScorer | None, matrix: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float64] | None, Chances | None]:
    """The risks and the uplift model's chances of one batch; a model that fails to score gives
    None (its rules decide nothing) rather than stopping the worker."""
    risks: npt.NDArray[np.float64] | None = None
    chances: Chances | None = None
    if active is not None:
        try:
            risks = active.predict_proba(matrix)
        except Exception:
            log.exception("model %s failed to score; deciding no_offer", active.label)
    if uplift is not None:
        try:
            chances = uplift.predict(matrix)
        except Exception:
            log.exception("uplift model %s failed to score; its rules offer nothing", uplift.label)
    return risks, chances


async def _predict_both(
    active: Scorer | None, uplift: UpliftScorer | None, matrix: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float64] | None, Chances | None]:
    if uplift is None:
        return await _predict(active, matrix), None
    if len(matrix) < _THREAD_ROWS:
        return score_both(active, uplift, matrix)
    return await asyncio.to_thread(score_both, active, uplift, matrix)


async def _predict(
    scorer: Scorer | None, matrix: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64] | None:
    if scorer is None:
        return None
    try:
        if len(matrix) < _THREAD_ROWS:
            return scorer.predict_proba(matrix)
        return await asyncio.to_thread(scorer.predict_proba, matrix)
    except Exception:
        # A model that fails to score decides nothing rather than stopping the worker.
        log.exception("model %s failed to score; deciding no_offer", scorer.label)
        return None
