"""Who may see the operator side (the dashboard, its socket, the decisions API), and from where.

Staff status alone is not enough: an operator is an active staff user with the
`offers.view_decision` permission (superusers have every permission). The dashboard's socket is
opened only by the dashboard's own page: its Origin must be this server's scheme, host and port.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Final
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from offers.models import normalize_origin

OPERATOR_PERMISSION: Final = "offers.view_decision"


def is_operator(user: Any) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm(OPERATOR_PERMISSION)
    )


View = Callable[..., HttpResponse]


def operator_required(view: View) -> View:
    """Anonymous visitors go to the admin's login page; users who are not operators get 403."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), "admin:login")
        if not is_operator(request.user):
            raise PermissionDenied("operators only: staff with the offers.view_decision permission")
        return view(request, *args, **kwargs)

    return guarded


def own_origin(scope: dict[str, Any]) -> bool:
    """Whether a socket's Origin is this server's own page: same scheme, host and port as the
    request (behind a TLS proxy, the scheme it forwards), or a CSRF_TRUSTED_ORIGINS entry."""
    headers = {bytes(k).lower(): bytes(v).decode("latin-1") for k, v in scope.get("headers", ())}
    origin = headers.get(b"origin")
    host = headers.get(b"host")
    if not origin or not host:
        return False
    secure = scope.get("scheme") in ("wss", "https")
    header, value = settings.SECURE_PROXY_SSL_HEADER or ("", "")
    forwarded = headers.get(header.removeprefix("HTTP_").replace("_", "-").lower().encode())
    if forwarded is not None:
        secure = forwarded.split(",")[0].strip() == value
    expected = normalize_origin(f"{'https' if secure else 'http'}://{host}")
    trusted = {normalize_origin(o) for o in settings.CSRF_TRUSTED_ORIGINS}
    given = normalize_origin(origin)
    return urlsplit(given).scheme in ("http", "https") and (given == expected or given in trusted)
