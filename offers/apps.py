from __future__ import annotations

from django.apps import AppConfig


class OffersConfig(AppConfig):
    name = "offers"
    verbose_name = "Live Offers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from offers import layer_reports, signals  # noqa: F401

        layer_reports.install()
