from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from offers.models import Site
from offers.sites import forget_sites


@receiver(post_save, sender=Site)
@receiver(post_delete, sender=Site)
def site_changed(**_kwargs: Any) -> None:
    forget_sites()
