from __future__ import annotations

from django.contrib import admin
from django.urls import path

from offers import alert_views, money, redeem, views

urlpatterns = [
    path("", views.shop, name="shop"),
    path("product/<str:sku>/", views.product, name="product"),
    path("cart/", views.cart, name="cart"),
    path("checkout/", views.checkout, name="checkout"),
    path("checkout/code/", views.checkout_code, name="checkout-code"),
    path("checkout/order/", views.checkout_order, name="checkout-order"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("collect/", views.collect, name="collect"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("api/decisions/", views.api_decisions, name="api-decisions"),
    path("api/redeem/", redeem.api_redeem, name="api-redeem"),
    path("api/uplift/", money.api_uplift, name="api-uplift"),
    path("api/alerts/", alert_views.api_alerts, name="api-alerts"),
    path(
        "api/alerts/<int:alert_id>/acknowledge/",
        alert_views.api_alert_acknowledge,
        name="api-alert-acknowledge",
    ),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("admin/", admin.site.urls),
]
