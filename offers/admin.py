from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from offers.models import Decision, Offer, OfferRule, Product, ScoringModel, Site


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "created_at"]
    search_fields = ["key", "name"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "sku", "site", "category", "price", "active"]
    list_filter = ["site", "category", "active"]
    search_fields = ["name", "sku"]


@admin.register(OfferRule)
class OfferRuleAdmin(admin.ModelAdmin):
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


@admin.register(ScoringModel)
class ScoringModelAdmin(admin.ModelAdmin):
    list_display = ["label", "state", "created_at", "activated_at"]
    list_filter = ["state", "name"]
    readonly_fields = ["feature_names", "metrics", "created_at", "activated_at"]
    exclude = ["artifact"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records of what happened: visible to operators, changed by nobody."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ["at", "session", "outcome", "risk", "model_label", "cart_value"]
    list_filter = ["outcome", "site"]
    search_fields = ["session"]
    date_hierarchy = "at"


@admin.register(Offer)
class OfferAdmin(ReadOnlyAdmin):
    list_display = [
        "code",
        "session",
        "discount_percent",
        "created_at",
        "expires_at",
        "accepted_at",
    ]
    search_fields = ["code", "session", "public_id"]
    date_hierarchy = "created_at"
