"""Sites' API keys in the admin: made (the key shown once, in a message), listed, revoked."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from offers.models import ApiKey
from offers.services import api_key_revoke


class RevokedFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:  # noqa: ARG002  # the filter's signature
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:  # noqa: ARG002  # the filter's signature
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in django-stubs
    list_display = ["shown_prefix", "name", "site", "created_at", "last_used_at", "status"]
    list_filter = ["site", RevokedFilter]
    search_fields = ["name", "prefix", "site__key"]
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:  # noqa: ARG002  # ModelAdmin's signature
        if obj is None:
            return ("site", "name")
        return ("shown_prefix", "name", "site", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:  # noqa: ARG002  # ModelAdmin's signature
        if obj is None:
            return ()
        return ("shown_prefix", "site", "created_at", "last_used_at", "revoked_at")

    @admin.display(description="key", ordering="prefix")
    def shown_prefix(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="status", ordering="revoked_at")
    def status(self, obj: ApiKey) -> str:
        return f"revoked {obj.revoked_at:%Y-%m-%d %H:%M}" if obj.revoked_at else "active"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        secret = obj.new_secret()
        super().save_model(request, obj, form, change)
        messages.warning(
            request,
            f"The API key of {obj.site.key} ({obj.name}) is {secret} — copy it now: it is "
            "stored only as a hash and is never shown again. Send it as "
            "Authorization: Bearer KEY to /api/redeem/.",
        )

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(api_key_revoke(key=key) for key in queryset)
        messages.success(
            request, f"{revoked} key{'' if revoked == 1 else 's'} revoked: they no longer work."
        )
