from __future__ import annotations

import hashlib
import secrets
from decimal import Decimal
from typing import ClassVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from offers.phrasing import reasons_in_words
from streaming.policy import DEFAULT_MARGIN, Outcome, Targeting

ANY_ORIGIN = "*"
# A site's public key: what a shop's snippet may send as its site.
SITE_KEY_PATTERN = r"^[A-Za-z0-9_-]+$"
SITE_KEY_MAX_LENGTH = 64


def normalize_origin(origin: str) -> str:
    """`https://Shop.example:443/` → `https://shop.example`: the form browsers send."""
    parts = urlsplit(origin.strip().rstrip("/"))
    if not parts.scheme or not parts.hostname:
        return origin.strip().lower()
    host = parts.hostname.lower()
    default_port = {"http": 80, "https": 443}.get(parts.scheme.lower())
    if parts.port and parts.port != default_port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme.lower()}://{host}"


def origin_allowed(origins: frozenset[str], origin: str | None) -> bool:
    """Whether a browser page at `origin` may send events to a site allowing `origins`.

    A request without an Origin header is allowed only where any origin is.
    """
    if ANY_ORIGIN in origins:
        return True
    return origin is not None and normalize_origin(origin) in origins


class Site(models.Model):
    key = models.CharField(
        max_length=SITE_KEY_MAX_LENGTH,
        unique=True,
        validators=[RegexValidator(SITE_KEY_PATTERN, "Letters, digits, - and _ only.")],
        help_text="The public key a shop's snippet sends as data-site.",
    )
    name = models.CharField(max_length=200)
    allowed_origins = models.TextField(
        blank=True,
        help_text="One origin a line (https://shop.example), or * for any origin.",
    )
    gross_margin_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal(round(DEFAULT_MARGIN * 100)),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text="What the shop keeps of a sale before costs of the sale, in %: rules that "
        "target by uplift offer only where the expected margin with the offer beats it without.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]

    @property
    def gross_margin(self) -> float:
        """The gross margin as a fraction (0.30 for 30%)."""
        return float(self.gross_margin_percent) / 100

    def __str__(self) -> str:
        return f"{self.name} ({self.key})"

    def origins(self) -> frozenset[str]:
        lines = (line.strip() for line in self.allowed_origins.splitlines())
        return frozenset(
            ANY_ORIGIN if line == ANY_ORIGIN else normalize_origin(line) for line in lines if line
        )

    def allows_origin(self, origin: str | None) -> bool:
        return origin_allowed(self.origins(), origin)


class Product(models.Model):
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="products")
    sku = models.CharField("product id", max_length=128)
    name = models.CharField(max_length=200)
    category = models.CharField(max_length=128, blank=True)
    price = models.DecimalField(
        max_digits=10, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["site", "category", "name"]
        constraints = [models.UniqueConstraint(fields=["site", "sku"], name="unique_sku_per_site")]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class OfferRule(models.Model):
    site = models.ForeignKey(
        Site,
        on_delete=models.CASCADE,
        related_name="offer_rules",
        null=True,
        blank=True,
        help_text="Leave empty for a rule that applies to every site.",
    )
    priority = models.PositiveIntegerField(default=100, help_text="Lower numbers are tried first.")
    min_risk = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    min_cart_value = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("0"), validators=[MinValueValidator(0)]
    )
    discount_percent = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(90)]
    )
    title = models.CharField(max_length=120)
    message = models.CharField(max_length=400)
    daily_budget = models.PositiveIntegerField(
        default=1000, help_text="At most this many offers from this rule a day (UTC)."
    )
    valid_minutes = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1)], help_text="How long an offer stays valid."
    )
    targeting = models.CharField(
        max_length=8,
        choices=[(t.value, t.label) for t in Targeting],
        default=Targeting.RISK.value,
        help_text="By risk: offer from min_risk up. By uplift: also only where the uplift model "
        "says the offer pays (more expected margin with it than without, at the site's gross "
        "margin); set min_risk to 0 to let uplift alone decide.",
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return f"{self.title} (-{self.discount_percent}%, risk ≥ {self.min_risk:.2f})"


class _ModelsOfKind(models.Manager["ScoringModel"]):
    """The models of one kind."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def get_queryset(self) -> models.QuerySet[ScoringModel]:
        return super().get_queryset().filter(kind=self.kind)


class ScoringModel(models.Model):
    """One version of a model: the cart-risk model (an XGBoost Booster stored as JSON or UBJSON)
    or the uplift model (two Boosters in a JSON envelope, streaming/uplift_model.py).

    `ScoringModel.objects` holds the cart-risk models only, which is what every page and
    command that says "the active model" means; `ScoringModel.uplift_models` holds the uplift
    models, versioned and activated on their own (one active uplift model beside the active
    cart-risk model); `ScoringModel.every_kind` both.
    """

    class Kind(models.TextChoices):
        RISK = "risk", "Cart risk"
        UPLIFT = "uplift", "Uplift"

    class State(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        SHADOW = "shadow", "Shadow"
        RETIRED = "retired", "Retired"

    class Format(models.TextChoices):
        JSON = "json", "JSON"
        UBJSON = "ubj", "UBJSON"

    name = models.CharField(max_length=64, default="cart-risk")
    version = models.PositiveIntegerField()
    artifact = models.BinaryField(help_text="The Booster, saved as JSON or UBJSON.")
    artifact_format = models.CharField(max_length=8, choices=Format.choices)
    feature_names = models.JSONField(default=list)
    metrics = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CANDIDATE)
    notes = models.TextField(blank=True)
    reference = models.JSONField(
        default=dict,
        blank=True,
        help_text="Its training data in bins (per feature and of its scores), to measure drift.",
    )
    pause_seconds = models.FloatField(
        null=True,
        blank=True,
        help_text="The PAUSE_SECONDS its training pauses were cut at (blank: not known).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    kind = models.CharField(
        max_length=8, choices=Kind.choices, default=Kind.RISK, editable=False, db_index=True
    )

    objects = _ModelsOfKind(Kind.RISK)
    uplift_models = _ModelsOfKind(Kind.UPLIFT)
    every_kind = models.Manager()

    class Meta:
        ordering = ["-version"]
        default_manager_name = "objects"
        base_manager_name = "every_kind"
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="unique_model_version"),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def pause_differs(self) -> bool:
        """Whether it was trained for another pause than the live PAUSE_SECONDS: its risks are
        then those of pauses of another length."""
        return self.pause_seconds is not None and self.pause_seconds != settings.PAUSE_SECONDS

    def _trained_for_other(self, pause_seconds: float) -> float | None:
        """The pause it learnt, when known and not `pause_seconds`."""
        trained = self.pause_seconds
        if trained is None or abs(trained - pause_seconds) < 1e-9:
            return None
        return trained

    def replay_pause_warning(self, replay_pause_seconds: float) -> str:
        """Words for a replay (backtest, evaluate_models) that looks for pauses of another length
        than the model learnt ('' when they agree or its pause is not known)."""
        trained = self._trained_for_other(replay_pause_seconds)
        if trained is None:
            return ""
        return (
            f"warning: {self.label} was trained on {trained:g} s pauses, and this replay finds "
            f"pauses of {replay_pause_seconds:g} s; for the pauses the model serves, run it with "
            f"PAUSE_SECONDS={trained:g}"
        )

    def pause_warning(self, live_pause_seconds: float) -> str:
        """Words for operators when the model learnt pauses of another length than it serves
        ('' when they agree or its pause is not known)."""
        trained = self._trained_for_other(live_pause_seconds)
        if trained is None:
            return ""
        return (
            f"{self.label} was trained on {trained:g} s pauses but PAUSE_SECONDS is "
            f"{live_pause_seconds:g}: its risks are for pauses of another length; train one "
            f"for {live_pause_seconds:g} s (manage.py train_model)"
        )


class UpliftModel(ScoringModel):
    """The uplift models alone (`ScoringModel.uplift_models`), for their own page in the admin:
    the same rows, figures and timeline, a list without the cart-risk models."""

    objects: ClassVar[_ModelsOfKind] = _ModelsOfKind(ScoringModel.Kind.UPLIFT)

    class Meta:
        proxy = True
        default_manager_name = "objects"
        verbose_name = "uplift model"


OUTCOME_CHOICES = [(outcome.value, outcome.label) for outcome in Outcome]


class Decision(models.Model):
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="decisions")
    session = models.CharField(max_length=64, db_index=True)
    pause_key = models.CharField(
        max_length=128, unique=True, help_text="Session and pause: one decision per pause."
    )
    at = models.DateTimeField(db_index=True)
    model = models.ForeignKey(
        ScoringModel, on_delete=models.PROTECT, null=True, blank=True, related_name="decisions"
    )
    model_label = models.CharField(max_length=80, blank=True)
    rule = models.ForeignKey(
        OfferRule,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="decisions",
        help_text="The rule of an offer or a holdout: what spent its daily budget.",
    )
    risk = models.FloatField(null=True, blank=True)
    shadow_risk = models.FloatField(null=True, blank=True)
    shadow_model = models.CharField(max_length=80, blank=True)
    features = models.JSONField(default=dict)
    reasons = models.JSONField(default=list, blank=True)
    outcome = models.CharField(max_length=16, choices=OUTCOME_CHOICES)
    why = models.CharField(
        max_length=200, blank=True, help_text="Why the policy decided so, in words."
    )
    # Holds the largest cart a shopper can fill (streaming.protocol: 499,500,000,000.00).
    cart_value = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    converted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.session} {self.outcome} at {self.at:%Y-%m-%d %H:%M:%S}"

    def reasons_in_words(self) -> list[str]:
        """The reasons as a shop owner reads them, worded against the live pause."""
        return reasons_in_words(self.reasons, self.features, pause_seconds=settings.PAUSE_SECONDS)


class Offer(models.Model):
    decision = models.OneToOneField(Decision, on_delete=models.PROTECT, related_name="offer")
    public_id = models.CharField("offer id", max_length=40, unique=True)
    session = models.CharField(max_length=64, db_index=True)
    rule = models.ForeignKey(OfferRule, on_delete=models.SET_NULL, null=True, blank=True)
    code = models.CharField(max_length=40, unique=True)
    title = models.CharField(max_length=120)
    message = models.CharField(max_length=400)
    discount_percent = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    shown_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    redeemed_at = models.DateTimeField(null=True, blank=True)
    # A database default too: the record writes offers with a column list (COPY) without it.
    redeemed_order_id = models.CharField(
        max_length=128,
        blank=True,
        default="",
        db_default="",
        help_text="The order that redeemed it: it may redeem it again.",
    )
    redeemed_total = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="What that order's shopper paid, after the discount.",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.code} ({self.discount_percent}%)"


class Mark(models.Model):
    """What a shopper did with an offer (saw, took, closed it) or with the cart (bought it).

    Kept whether or not the decision it belongs to is written yet, and applied to it once it is
    (`applied`): the record ends the same whichever arrives first. One row per session, offer and
    kind: a mark sent again changes nothing.
    """

    class Kind(models.TextChoices):
        SHOWN = "offer_shown", "Offer shown"
        ACCEPTED = "offer_accepted", "Offer accepted"
        DISMISSED = "offer_dismissed", "Offer dismissed"
        PURCHASE = "purchase", "Purchase"

    session = models.CharField(max_length=64, db_index=True)
    offer_public_id = models.CharField("offer id", max_length=40, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True, db_index=True)
    applied = models.BooleanField(default=False, db_index=True)
    # A purchase's order, what was paid (after any discount) and the offer code used, as far as
    # the shop said: the purchase event and the shop's redemption each fill in what is missing.
    order_id = models.CharField(max_length=128, blank=True, default="", db_default="")
    total = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    code = models.CharField(max_length=40, blank=True, default="", db_default="")

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "offer_public_id", "kind"], name="one_mark_per_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session} {self.kind} at {self.at:%Y-%m-%d %H:%M:%S}"


class ApiKey(models.Model):
    """A site's secret key for its shop's backend (`POST /api/redeem/`).

    Only a SHA-256 digest of the key is kept: the key is 32 random bytes, so a fast hash is
    enough (nothing to guess from), and it is looked up by its digest. The key itself is shown
    once, when it is made.
    """

    KEY_PREFIX = "lok_"
    PREFIX_LENGTH = len(KEY_PREFIX) + 8

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. the checkout server.")
    prefix = models.CharField(
        max_length=16, editable=False, help_text="The key's first characters, to tell keys apart."
    )
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["site", "-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @staticmethod
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def new_secret(self) -> str:
        """Give the key a fresh secret (kept as its digest and prefix) and return it: the only
        time it is seen."""
        key = self.KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix = key[: self.PREFIX_LENGTH]
        self.secret_hash = self.digest(key)
        return key

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class DeadRecord(models.Model):
    """A record that could not be written (a constraint it breaks, a site deleted since): set
    aside so that the records after it go on, and kept here for an operator to look at."""

    kind = models.CharField(max_length=16)
    payload = models.JSONField()
    error = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} set aside at {self.created_at:%Y-%m-%d %H:%M:%S}"


class ModelEvent(models.Model):
    """One change to the registry: the model's own timeline (who, when, from which version)."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        ACTIVATED = "activated", "Activated"
        SHADOWED = "shadowed", "Put in shadow"
        UNSHADOWED = "unshadowed", "Taken out of shadow"
        ROLLED_BACK = "rolled_back", "Rolled back to"
        PROMOTED = "promoted", "Promoted from shadow"
        RETIRED = "retired", "Retired"
        REFUSED = "refused", "Refused by the gate"

    model = models.ForeignKey(ScoringModel, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=16, choices=Action.choices)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.CharField(max_length=150, blank=True, help_text="Blank: a command or the worker.")
    previous = models.CharField(
        max_length=80, blank=True, help_text="The model it replaced in that role, if any."
    )
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.model.label} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"


class Alert(models.Model):
    """Something an operator must know: raised and resolved by the worker.

    One open alert per (kind, subject): raising it again only moves `last_seen`.
    """

    class Severity(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    kind = models.CharField(max_length=32, db_index=True)
    subject = models.CharField(
        max_length=128, blank=True, help_text="What it is about: a model, a feature, a rule."
    )
    severity = models.CharField(max_length=8, choices=Severity.choices)
    message = models.TextField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-last_seen", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"],
                condition=models.Q(resolved_at__isnull=True),
                name="one_open_alert_per_subject",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"
