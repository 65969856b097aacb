"""Request bodies bounded before they are read: an ASGI wrapper around Django's HTTP app.

Django reads a whole body before a view runs. This wrapper refuses one whose declared length is
over its path's limit at once (413, nothing read), and stops reading one that streams past it.
The limits: 64 KiB for `/collect/`, the model upload's own limit for the admin's model form
(only with a staff session: anyone else gets the default), and `MAX_BODY_BYTES` elsewhere.
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any, Final

from channels.db import database_sync_to_async
from django.conf import settings

from offers import metrics

COLLECT_BYTES: Final = 64 * 1024
MODEL_UPLOAD_BYTES: Final = 32 * 2**20
# The model upload's form around its file: fields, boundaries, headers.
_FORM_SLACK: Final = 2**20
_UPLOAD_PATH: Final = re.compile(r"^/admin/offers/scoringmodel/(add|[0-9]+/change)/$")

Scope = dict[str, Any]


class BodyLimit:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = await self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(scope, send, limit)
            return
        received = 0
        over = False
        started = False

        async def bounded_receive() -> dict[str, Any]:
            nonlocal received, over
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    # as if the client had left: Django stops reading and answers nothing
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, bounded_receive, watched_send)
        if over and not started:
            await _too_large(scope, send, limit)

    async def limit_for(self, scope: Scope) -> int:
        path = scope.get("path", "")
        if path == "/collect/":
            return COLLECT_BYTES
        if _UPLOAD_PATH.match(path) and await database_sync_to_async(_staff_session)(scope):
            return MODEL_UPLOAD_BYTES + _FORM_SLACK
        return int(settings.MAX_BODY_BYTES)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _staff_session(scope: Scope) -> bool:
    """Whether the request carries the session of an active staff user."""
    from django.contrib.auth import get_user_model

    cookies = SimpleCookie()
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            cookies.load(bytes(value).decode("latin-1"))
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is None:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(morsel.value)
    user_id = session.get("_auth_user_id")
    if user_id is None:
        return False
    return bool(get_user_model().objects.filter(pk=user_id, is_active=True, is_staff=True).exists())


async def _too_large(scope: Scope, send: Any, limit: int) -> None:
    metrics.BODIES_REFUSED.inc()
    if scope.get("path") == "/collect/":
        body = b'{"error": "too_large", "detail": "the body is over %d bytes"}' % limit
        kind = b"application/json"
    else:
        body = b"request body over %d bytes\n" % limit
        kind = b"text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
