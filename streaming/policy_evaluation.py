"""Offer policies compared on the same generated shoppers, whose responses to offers are known.

Each shopper of `streaming.generator` has a hidden response to an offer (persuadable, sure thing,
lost cause, put off), so every policy can be played on the very same shoppers and what it earns
read off exactly, with no control group needed. A policy is `policy.decide` itself, run on every
pause of every shopper with a cart (the at-risk sessions): a shopper is offered at its first
pause where the policy offers, and then buys as its response says; a shopper never offered buys
as its session does. Money per shopper:

- cart: what the session's purchase paid when it bought without an offer, else its cart at its
  last pause (what a persuaded shopper buys);
- paid: cart x (1 - discount) for an offered buyer, the cart for any other buyer, 0 otherwise;
- discount given: cart x discount for an offered buyer.

Per 1,000 at-risk sessions, against no offers at all: incremental buyers, discount given and net
incremental revenue (what shoppers paid, after discounts, less what they would have paid with no
offers), and the net incremental margin (the same at the shop's gross margin: a sale keeps
cart x (margin - discount)), which is what uplift targeting maximises. Nothing here is sampled
twice: the same shoppers, the same pauses, the same scores. `perfect_targeting` offers exactly the
persuadable shoppers, which only the generator knows: the most any targeting could earn.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from streaming.features import FEATURE_NAMES
from streaming.generator import GeneratedSession
from streaming.policy import OFFER, Rule, Targeting, decide
from streaming.training import DAY_SECONDS, session_pauses
from streaming.uplift_training import QiniCurve

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Predict = Callable[[npt.NDArray[np.float32]], Floats]
PredictBoth = Callable[[npt.NDArray[np.float32]], tuple[Floats, Floats]]

POLICIES: Final = ("none", "offer_all", "risk", "uplift")
SITE: Final = "generated"
_CART: Final = FEATURE_NAMES.index("cart_value")


@dataclass(frozen=True)
class Shoppers:
    """The at-risk shoppers: every pause's features (rows of `X`, `session` saying whose, in
    order), and per shopper its cart, whether it buys without an offer and with one."""

    X: npt.NDArray[np.float32]
    session: npt.NDArray[np.intp]
    cart: Floats
    buys_without: Bools
    buys_with: Bools

    def __len__(self) -> int:
        return len(self.cart)


def at_risk_shoppers(
    sessions: Sequence[GeneratedSession],
    *,
    pause_seconds: float,
    start: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> Shoppers:
    """The shoppers that pause with a cart at least once, replayed into their pauses."""
    rows: list[list[float]] = []
    whose: list[int] = []
    carts: list[float] = []
    without: list[bool] = []
    with_: list[bool] = []
    spacing = DAY_SECONDS / max(len(sessions), 1)
    for i, session in enumerate(sessions):
        pauses, _ = session_pauses(session, pause_seconds=pause_seconds, start=start + i * spacing)
        if progress is not None and ((i + 1) % 1000 == 0 or i + 1 == len(sessions)):
            progress(i + 1, len(sessions))
        if not pauses:
            continue
        rows.extend(pauses)
        whose.extend([len(carts)] * len(pauses))
        carts.append(_cart_of(session, pauses[-1][_CART]))
        without.append(session.purchased)
        with_.append(session.buys_with_offer)
    return Shoppers(
        np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES)),
        np.asarray(whose, dtype=np.intp),
        np.asarray(carts, dtype=np.float64),
        np.asarray(without, dtype=bool),
        np.asarray(with_, dtype=bool),
    )


def _cart_of(session: GeneratedSession, last_pause_cart: float) -> float:
    for event in reversed(session.events):
        if event.frame["event"] == "purchase":
            props = event.frame["props"]
            assert isinstance(props, dict)
            return float(props["total"])
    return float(last_pause_cart)


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    offered: int  # shoppers offered
    buyers: int
    incremental_buyers_per_1000: float
    discount_per_1000: float
    net_incremental_revenue_per_1000: float
    net_incremental_margin_per_1000: float = 0.0

    def as_json(self) -> dict[str, object]:
        """What `evaluate_policies --json` writes for the policy (README, "Targeting by uplift"):
        per 1,000 at-risk sessions."""
        return {
            "policy": self.policy,
            "incremental_buyers_per_1000": round(self.incremental_buyers_per_1000, 2),
            "discount_per_1000": round(self.discount_per_1000, 2),
            "net_incremental_revenue_per_1000": round(self.net_incremental_revenue_per_1000, 2),
        }


def evaluation_rules(*, discount_percent: int, min_risk: float) -> dict[str, Rule]:
    """The one rule each policy plays with: the same discount, no cart minimum, no budget."""

    def rule(rule_min_risk: float, targeting: Targeting) -> Rule:
        return Rule(
            id=1,
            priority=10,
            min_risk=rule_min_risk,
            min_cart_value=0.0,
            discount_percent=discount_percent,
            title=f"{discount_percent}% off your cart",
            message="",
            daily_budget=2**62,
            valid_minutes=30,
            targeting=targeting,
        )

    return {
        "offer_all": rule(0.0, Targeting.RISK),
        "risk": rule(min_risk, Targeting.RISK),
        "uplift": rule(0.0, Targeting.UPLIFT),
    }


def offered_by(
    shoppers: Shoppers,
    rule: Rule | None,
    *,
    risks: Floats,
    chances: tuple[Floats, Floats] | None,
    margin: float,
) -> tuple[Bools, Floats]:
    """Which shoppers `rule` offers at one of their pauses (`policy.decide` on every pause), and
    the discount (a fraction) of each offer."""
    n = len(shoppers)
    if rule is None:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float64)
    rows = len(shoppers.X)
    p_offer, p_none = chances if chances is not None else (None, None)
    verdicts = decide(
        risks=risks,
        sites=[SITE] * rows,
        cart_values=shoppers.X[:, _CART].astype(np.float64),
        last_offer_at=np.full(rows, np.nan),
        holdout_buckets=np.full(rows, float(2**31)),  # no holdout, no exploring: all counted
        rules=[rule],
        used_today={},
        now=0.0,
        cooldown_seconds=0.0,
        holdout_percent=0.0,
        p_offer=p_offer,
        p_none=p_none,
        margins={SITE: margin},
    )
    # a shopper is offered at its first pause where the policy offers: any pause will do here
    offered = np.zeros(n, dtype=bool)
    offered[shoppers.session[verdicts.outcome == OFFER]] = True
    return offered, np.where(offered, rule.discount_percent / 100, 0.0)


def play(
    shoppers: Shoppers, policy: str, offered: Bools, discount: Floats, *, margin: float
) -> PolicyResult:
    """What `policy` earns, offering `offered` shoppers `discount` (a fraction) each."""
    buys = np.where(offered, shoppers.buys_with, shoppers.buys_without)
    paid = np.where(buys, shoppers.cart * (1 - discount), 0.0)
    given = np.where(buys & offered, shoppers.cart * discount, 0.0)
    baseline = np.where(shoppers.buys_without, shoppers.cart, 0.0)
    # what a sale keeps once its goods are paid for: cart x (margin - discount)
    kept = np.where(buys, shoppers.cart * (margin - discount), 0.0)
    per = 1000 / max(len(shoppers), 1)
    return PolicyResult(
        policy,
        int(offered.sum()),
        int(buys.sum()),
        float(buys.sum() - shoppers.buys_without.sum()) * per,
        float(given.sum()) * per,
        float(paid.sum() - baseline.sum()) * per,
        float(kept.sum() - baseline.sum() * margin) * per,
    )


def perfect_targeting(shoppers: Shoppers, *, discount_percent: int, margin: float) -> PolicyResult:
    """Offers to the persuadable shoppers only: the ceiling of any targeting."""
    offered = shoppers.buys_with & ~shoppers.buys_without
    discount = np.where(offered, discount_percent / 100, 0.0)
    return play(shoppers, "perfect", offered, discount, margin=margin)


def evaluate(
    shoppers: Shoppers,
    *,
    risk: Predict,
    uplift: PredictBoth,
    discount_percent: int,
    min_risk: float,
    margin: float,
) -> list[PolicyResult]:
    """No offers, offer-all, risk targeting and uplift targeting, on the same shoppers."""
    risks = risk(shoppers.X)
    chances = uplift(shoppers.X)
    rules = evaluation_rules(discount_percent=discount_percent, min_risk=min_risk)
    results: list[PolicyResult] = []
    for policy in POLICIES:
        offered, discount = offered_by(
            shoppers, rules.get(policy), risks=risks, chances=chances, margin=margin
        )
        results.append(play(shoppers, policy, offered, discount, margin=margin))
    return results


def table(results: Sequence[PolicyResult], *, shoppers: int) -> str:
    """The results as a plain-text table."""
    head = (
        f"{'policy':<10}{'offered':>9}{'buyers':>9}{'incr. buyers':>14}"
        f"{'discount':>12}{'net incr. revenue':>19}{'net incr. margin':>18}"
    )
    lines = [f"per 1,000 at-risk sessions ({shoppers:,} at-risk sessions)", head]
    for r in results:
        lines.append(
            f"{r.policy:<10}{r.offered * 1000 / max(shoppers, 1):>9,.0f}"
            f"{r.buyers * 1000 / max(shoppers, 1):>9,.1f}"
            f"{r.incremental_buyers_per_1000:>+14,.1f}{r.discount_per_1000:>12,.2f}"
            f"{r.net_incremental_revenue_per_1000:>+19,.2f}"
            f"{r.net_incremental_margin_per_1000:>+18,.2f}"
        )
    return "\n".join(lines)


# --- the Qini curve as a picture -----------------------------------------------------------------


def qini_svg(curve: QiniCurve, *, title: str = "Qini curve of the uplift model") -> str:
    """A standalone SVG of the Qini curve, with the perfect ranking and the random line."""
    width, height, left, top, right, bottom = 560, 360, 64, 40, 16, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    n = float(curve.x[-1]) if len(curve.x) else 1.0
    y_values = np.concatenate([curve.model, curve.perfect, [0.0]])
    y_low, y_high = float(y_values.min()), float(y_values.max())
    y_high = y_high if y_high > y_low else y_low + 1.0
    step = _nice_step((y_high - y_low) / 5)
    y_low, y_high = math.floor(y_low / step) * step, math.ceil(y_high / step) * step

    def px(x: float) -> float:
        return left + plot_w * x / n

    def py(y: float) -> float:
        return top + plot_h * (1 - (y - y_low) / (y_high - y_low))

    def path(xs: Floats, ys: Floats) -> str:
        # at most ~400 points: enough for a smooth line, small enough for a README
        keep = np.unique(np.linspace(0, len(xs) - 1, min(len(xs), 400)).astype(int))
        return " ".join(f"{px(float(xs[i])):.1f},{py(float(ys[i])):.1f}" for i in keep)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">{html.escape(title)}'
        f" (Qini coefficient {curve.coefficient:.3f})</text>",
    ]
    for i in range(round((y_high - y_low) / step) + 1):
        y = y_low + i * step
        parts.append(
            f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + plot_w}" y2="{py(y):.1f}" '
            'stroke="#e5e5e5"/>'
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:,.0f}</text>'
        )
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<text x="{px(share * n):.1f}" y="{top + plot_h + 18}" text-anchor="middle">'
            f"{share:.0%}</text>"
        )
    parts += [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">share of held-out '
        "randomised sessions, by predicted uplift</text>",
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2})">incremental buyers</text>',
        f'<polyline fill="none" stroke="#999" stroke-width="1.5" stroke-dasharray="3 3" '
        f'points="{path(curve.perfect_x, curve.perfect)}"/>',
        f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(n):.1f}" '
        f'y2="{py(float(curve.model[-1])):.1f}" stroke="#D55E00" stroke-width="1.5" '
        'stroke-dasharray="6 4"/>',
        f'<polyline fill="none" stroke="#0072B2" stroke-width="2.5" '
        f'points="{path(curve.x, curve.model)}"/>',
    ]
    legend = [
        ("#0072B2", "", "uplift model"),
        ("#D55E00", "6 4", "offers at random"),
        ("#999", "3 3", "perfect ranking"),
    ]
    for i, (stroke, dash, label) in enumerate(legend):
        y = top + plot_h - 58 + i * 18
        x = left + plot_w - 150
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{x}" y1="{y}" x2="{x + 24}" y2="{y}" stroke="{stroke}" '
            f'stroke-width="2"{dashes}/><text x="{x + 30}" y="{y + 4}">{label}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least `raw`."""
    if raw <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
