from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from offers.bodies import MODEL_UPLOAD_BYTES
from offers.models import DeadRecord, Decision, Mark, Offer, OfferRule, Product, ScoringModel, Site
from offers.services import model_activate, model_create, model_rollback, model_shadow
from streaming.features import FEATURE_NAMES, FEATURES
from streaming.model_file import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_NODES_PER_TREE,
    MAX_TREES,
    ModelError,
    check_model_file,
    sniff_format,
)
from streaming.model_trial import trial_model

MAX_MODEL_BYTES = MODEL_UPLOAD_BYTES  # what the body limit lets staff send


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in django-stubs
    list_display = ["key", "name", "created_at"]
    search_fields = ["key", "name"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in django-stubs
    list_display = ["name", "sku", "site", "category", "price", "active"]
    list_filter = ["site", "category", "active"]
    search_fields = ["name", "sku"]


@admin.register(OfferRule)
class OfferRuleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in django-stubs
    list_display = [
        "title",
        "site",
        "priority",
        "min_risk",
        "min_cart_value",
        "discount_percent",
        "daily_budget",
        "active",
    ]
    list_editable = ["priority", "active"]
    list_filter = ["site", "active"]


class ScoringModelForm(forms.ModelForm):  # type: ignore[type-arg]  # generic only in django-stubs
    """Upload of an XGBoost model file: JSON or UBJSON, checked before anything is stored."""

    model_file = forms.FileField(
        required=False,
        help_text="An XGBoost Booster saved as JSON or UBJSON (never a pickle), trained on "
        f"the live feature list, within the limits: at most {MAX_TREES:,} trees, "
        f"{MAX_NODES_PER_TREE:,} nodes a tree and {MAX_NODES:,} in all, a depth of {MAX_DEPTH}, "
        "finite values. It is tried in a separate process before it is stored.",
    )

    class Meta:
        model = ScoringModel
        fields = ["name", "notes"]

    def clean_model_file(self) -> bytes | None:
        upload = self.cleaned_data.get("model_file")
        if self.instance.pk:
            return None  # a stored version's artifact never changes
        if upload is None:
            raise forms.ValidationError("Choose a model file to upload.")
        if upload.size > MAX_MODEL_BYTES:
            raise forms.ValidationError(f"The file is over {MAX_MODEL_BYTES // 2**20} MiB.")
        raw: bytes = upload.read()
        try:
            # The bounds and the structure here; XGBoost only ever reads the file in the trial's
            # process, never in this one.
            check_model_file(raw)
            trial_model(raw)
        except ModelError as exc:
            raise forms.ValidationError(str(exc)) from None
        return raw


@admin.register(ScoringModel)
class ScoringModelAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in django-stubs
    form = ScoringModelForm
    list_display = ["label", "state", "auc", "pause", "created_at", "activated_at"]
    list_filter = ["state", "name"]
    readonly_fields = [
        "version",
        "state",
        "artifact_format",
        "pause",
        "metrics_table",
        "feature_names",
        "created_at",
        "activated_at",
    ]
    actions = ["activate", "rollback", "run_as_shadow", "stop_shadow"]

    @admin.display(description="trained for pauses of", ordering="pause_seconds")
    def pause(self, obj: ScoringModel) -> str:
        if obj.pause_seconds is None:
            return "not known"
        if obj.pause_differs():
            return format_html(
                '<strong style="color: var(--error-fg)">⚠ {} s: the live pause is {} s</strong>',
                f"{obj.pause_seconds:g}",
                f"{settings.PAUSE_SECONDS:g}",
            )
        return f"{obj.pause_seconds:g} s"

    def _warn_of_pauses(self, request: HttpRequest, models: Any) -> None:
        """A warning for each model, among those in use or asked for, trained for another pause
        than the live one: its risks are those of pauses of another length."""
        for model in models:
            if model.pause_differs():
                self.message_user(
                    request,
                    f"Model {model.label} ({model.get_state_display().lower()}) was trained for "
                    f"pauses of {model.pause_seconds:g} s, but PAUSE_SECONDS is "
                    f"{settings.PAUSE_SECONDS:g} s: its risks are those of pauses of another "
                    "length. Train a model for the live pause (manage.py train_model), or set "
                    "PAUSE_SECONDS back.",
                    messages.WARNING,
                )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if request.method == "GET":
            in_use = ScoringModel.objects.filter(
                state__in=[ScoringModel.State.ACTIVE, ScoringModel.State.SHADOW]
            )
            self._warn_of_pauses(request, in_use)
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if request.method == "GET" and object_id.isdigit():
            self._warn_of_pauses(request, ScoringModel.objects.filter(pk=object_id))
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="held-out AUC")
    def auc(self, obj: ScoringModel) -> str:
        value = obj.metrics.get("auc") if isinstance(obj.metrics, dict) else None
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    @admin.display(description="metrics")
    def metrics_table(self, obj: ScoringModel) -> str:
        if not obj.metrics:
            return "-"
        return format_html_join(
            "", "<div><b>{}</b>: {}</div>", ((k, v) for k, v in sorted(obj.metrics.items()))
        )

    def get_fields(self, _request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["name", "notes", "model_file"]
        return ["name", "notes", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: ScoringModel, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name", "notes"])
            return
        raw = form.cleaned_data["model_file"]
        created = model_create(
            artifact=raw,
            artifact_format=sniff_format(raw),
            feature_names=list(FEATURE_NAMES),
            metrics={"uploaded_by": request.user.get_username()},
            name=obj.name,
            notes=obj.notes,
        )
        obj.pk, obj.version = created.pk, created.version
        obj.refresh_from_db()

    @admin.action(description="Activate the selected model (every server within 2 s)")
    def activate(self, request: HttpRequest, queryset: Any) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model to activate.", messages.ERROR)
            return
        model = queryset.get()
        try:
            model_activate(model=model)
        except ModelError as exc:
            self.message_user(request, f"{model.label} was not activated: {exc}", messages.ERROR)
            return
        self.message_user(request, f"{model.label} is now active.", messages.SUCCESS)

    @admin.action(description="Roll back to the previously active model")
    def rollback(self, request: HttpRequest, _queryset: Any) -> None:
        try:
            model = model_rollback()
        except ModelError as exc:
            self.message_user(request, f"Not rolled back: {exc}", messages.ERROR)
            return
        if model is None:
            self.message_user(request, "No earlier active model to roll back to.", messages.ERROR)
        else:
            self.message_user(
                request, f"Rolled back: {model.label} is active again.", messages.SUCCESS
            )

    @admin.action(description="Run the selected model in shadow (scored, never acted on)")
    def run_as_shadow(self, request: HttpRequest, queryset: Any) -> None:
        if queryset.count() != 1 or queryset.get().state == ScoringModel.State.ACTIVE:
            self.message_user(
                request, "Select exactly one model that is not active.", messages.ERROR
            )
            return
        model = queryset.get()
        try:
            model_shadow(model=model)
        except ModelError as exc:
            self.message_user(
                request, f"{model.label} does not run in shadow: {exc}", messages.ERROR
            )
            return
        self.message_user(request, f"{model.label} now runs in shadow.", messages.SUCCESS)

    @admin.action(description="Stop the shadow model")
    def stop_shadow(self, request: HttpRequest, _queryset: Any) -> None:
        model_shadow(model=None)
        self.message_user(request, "No model runs in shadow now.", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in django-stubs
    """Records of what happened: visible to operators, changed by nobody."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002  # ModelAdmin's signature
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002  # ModelAdmin's signature
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002  # ModelAdmin's signature
        return False


def _change_link(obj: Any) -> str:
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj)


def _risk(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = [
        "at",
        "session",
        "outcome",
        "risk_shown",
        "why_shown",
        "reasons_shown",
        "model_label",
        "shadow_risk_shown",
        "cart_value",
        "offer_link",
        "converted_at",
    ]
    list_filter = ["outcome", "site"]
    list_select_related = ["offer"]
    search_fields = ["session", "pause_key"]
    date_hierarchy = "at"
    readonly_fields = [
        "at",
        "site",
        "session",
        "pause_key",
        "outcome",
        "why",
        "risk_shown",
        "reasons_shown",
        "contributions",
        "cart_value",
        "rule",
        "offer_link",
        "converted_at",
        "model_label",
        "shadow_risk_shown",
        "shadow_model",
        "features_table",
    ]
    fields = tuple(readonly_fields)

    @admin.display(description="risk", ordering="risk")
    def risk_shown(self, obj: Decision) -> str:
        return _risk(obj.risk)

    @admin.display(description="shadow risk", ordering="shadow_risk")
    def shadow_risk_shown(self, obj: Decision) -> str:
        return _risk(obj.shadow_risk)

    @admin.display(description="reasons")
    def reasons_shown(self, obj: Decision) -> str:
        words = obj.reasons_in_words()
        if not words:
            return "-"
        # wide enough to read in the change list beside the other columns
        return format_html_join(
            "", '<div style="min-width: 18rem">{}</div>', ((said,) for said in words)
        )

    @admin.display(description="why", ordering="why")
    def why_shown(self, obj: Decision) -> str:
        return format_html('<div style="min-width: 12rem">{}</div>', obj.why or "-")

    @admin.display(description="what each feature pushed (log-odds; + raises the risk)")
    def contributions(self, obj: Decision) -> str:
        rows = [
            (r["feature"], f"{r['value']:g}", f"{r['contribution']:+.3f}")
            for r in obj.reasons
            if isinstance(r, dict)
            and isinstance(r.get("value"), (int, float))
            and isinstance(r.get("contribution"), (int, float))
        ]
        if not rows:
            return "-"
        return format_html(
            "<table><tr><th>feature</th><th>value</th><th>push</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="features")
    def features_table(self, obj: Decision) -> str:
        if not isinstance(obj.features, dict) or not obj.features:
            return "-"
        rows = (
            (name, FEATURES.get(name, ""), value) for name, value in sorted(obj.features.items())
        )
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="offer")
    def offer_link(self, obj: Decision) -> str:
        offer = getattr(obj, "offer", None)
        return "-" if offer is None else _change_link(offer)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """`?pause_key=`, the dashboard's link to a decision: the decision itself once it is
        recorded; until then the (empty) list, saying so."""
        key = request.GET.get("pause_key")
        if key is not None and set(request.GET) == {"pause_key"}:
            found = Decision.objects.filter(pause_key=key).values_list("pk", flat=True).first()
            if found is not None:
                return redirect(reverse("admin:offers_decision_change", args=[found]))
            self.message_user(
                request,
                "This decision is not in the database yet: it is written within a few seconds "
                "of being made. Reload in a moment.",
                messages.INFO,
            )
        return super().changelist_view(request, extra_context)


@admin.register(Offer)
class OfferAdmin(ReadOnlyAdmin):
    list_display = [
        "code",
        "session",
        "discount_percent",
        "created_at",
        "expires_at",
        "accepted_at",
        "decision_link",
    ]
    list_select_related = ["decision"]
    search_fields = ["code", "session", "public_id"]
    date_hierarchy = "created_at"

    @admin.display(description="decision")
    def decision_link(self, obj: Offer) -> str:
        return _change_link(obj.decision)


@admin.register(Mark)
class MarkAdmin(ReadOnlyAdmin):
    """What shoppers did with offers and carts; `applied` once its decision is written."""

    list_display = ["at", "session", "kind", "offer_public_id", "applied"]
    list_filter = ["kind", "applied"]
    search_fields = ["session", "offer_public_id"]
    date_hierarchy = "at"


@admin.register(DeadRecord)
class DeadRecordAdmin(ReadOnlyAdmin):
    """Records that could not be written, set aside: an operator looks, fixes the cause, and
    deletes them once dealt with."""

    list_display = ["created_at", "kind", "short_error"]
    list_filter = ["kind"]
    readonly_fields = ["kind", "created_at", "error", "record"]
    exclude = ["payload"]
    date_hierarchy = "created_at"

    @admin.display(description="error")
    def short_error(self, obj: DeadRecord) -> str:
        return obj.error if len(obj.error) <= 120 else obj.error[:119] + "…"

    @admin.display(description="record")
    def record(self, obj: DeadRecord) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002  # ModelAdmin's signature
        return bool(request.user.is_superuser)


from offers import admin_keys  # noqa: E402, F401  # registers the API keys' admin
