from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from offers.models import OfferRule, Product, ScoringModel, Site

DEMO_PRODUCTS = [
    ("sku-espresso", "Espresso machine", "Kitchen", "249.00", "15-bar pump, steam wand."),
    ("sku-grinder", "Burr grinder", "Kitchen", "129.00", "40 grind settings."),
    ("sku-kettle", "Gooseneck kettle", "Kitchen", "69.00", "Temperature control to the degree."),
    ("sku-mug", "Stoneware mug", "Kitchen", "14.00", "Hand glazed, 350 ml."),
    ("sku-headphones", "Noise-cancelling headphones", "Audio", "299.00", "30 hours of play."),
    ("sku-speaker", "Bookshelf speakers", "Audio", "189.00", "A pair, with stands."),
    ("sku-earbuds", "Wireless earbuds", "Audio", "99.00", "IPX4, charging case."),
    ("sku-backpack", "Commuter backpack", "Travel", "119.00", "Fits a 16-inch laptop."),
    ("sku-bottle", "Insulated bottle", "Travel", "29.00", "Cold for 24 hours."),
    ("sku-jacket", "Rain jacket", "Travel", "159.00", "Packs into its own pocket."),
    ("sku-lamp", "Desk lamp", "Home", "79.00", "Dimmable, warm to cool."),
    ("sku-plant", "Potted olive tree", "Home", "49.00", "About 60 cm tall."),
]

DEMO_RULES = [
    # (priority, min_risk, min_cart_value, discount, title, message)
    (10, 0.8, "150.00", 15, "15% off your cart", "Still deciding? Take 15% off if you order now."),
    (20, 0.6, "40.00", 10, "10% off your cart", "Here is 10% off to help you decide."),
]


class Command(BaseCommand):
    help = "Create the demo site, products, offer rules and an active model (idempotent)."

    def handle(self, *_args: Any, **_options: Any) -> None:
        self.ensure_catalogue()
        self.ensure_model()

    @transaction.atomic
    def ensure_catalogue(self) -> None:
        site, created = Site.objects.get_or_create(
            key="demo", defaults={"name": "Demo shop", "allowed_origins": "*"}
        )
        self.stdout.write(f"site demo: {'created' if created else 'already there'}")
        made = 0
        for sku, name, category, price, description in DEMO_PRODUCTS:
            _, was_made = Product.objects.get_or_create(
                site=site,
                sku=sku,
                defaults={
                    "name": name,
                    "category": category,
                    "price": Decimal(price),
                    "description": description,
                },
            )
            made += was_made
        self.stdout.write(f"products: {made} created, {len(DEMO_PRODUCTS) - made} already there")
        if not OfferRule.objects.filter(site=site).exists():
            for priority, min_risk, min_cart, discount, title, message in DEMO_RULES:
                OfferRule.objects.create(
                    site=site,
                    priority=priority,
                    min_risk=min_risk,
                    min_cart_value=Decimal(min_cart),
                    discount_percent=discount,
                    title=title,
                    message=message,
                )
            self.stdout.write(f"offer rules: {len(DEMO_RULES)} created")
        else:
            self.stdout.write("offer rules: already there")

    def ensure_model(self) -> None:
        from offers.training import train_default_model

        active = ScoringModel.objects.filter(state=ScoringModel.State.ACTIVE).first()
        if active is not None:
            self.stdout.write(f"model: {active.label} is active")
            return
        self.stdout.write("model: none active, training one on generated sessions")
        model = train_default_model(activate=True, stdout=self.stdout)
        self.stdout.write(f"model: {model.label} trained and active")
