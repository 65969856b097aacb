from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from offers.models import DeadRecord, Decision, Mark, Offer, OfferRule, Product, Site
from streaming.features import FEATURES


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in django-stubs
    list_display = ["key", "name", "gross_margin_percent", "created_at"]
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
        "targeting",
        "daily_budget",
        "active",
    ]
    list_editable = ["priority", "active"]
    list_filter = ["site", "active"]


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


from offers import admin_keys, admin_models  # noqa: E402, F401  # register API keys and models
