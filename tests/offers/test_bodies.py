"""Request bodies are bounded before they are read, whatever their size or content type."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from config.asgi import application
from offers.bodies import COLLECT_BYTES
from tests.factories import operator_user

pytestmark = pytest.mark.django_db(transaction=True)


async def post(
    path: str, chunks: list[bytes], *, declared: int | None = None, cookie: str = ""
) -> tuple[int, bytes, int]:
    """POST through the whole ASGI app; (status, body, how many chunks the app read)."""
    headers = [(b"host", b"localhost"), (b"content-type", b"multipart/form-data; boundary=x")]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    read = 0
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not pending:
            await asyncio.Event().wait()  # the client waits for its answer
        read += 1
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await application(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, read


async def test_a_declared_body_over_the_limit_is_refused_unread():
    status, body, read = await post("/admin/login/", [b"x" * 100], declared=30 * 2**20)
    assert (status, read) == (413, 0)
    assert b"over 1048576 bytes" in body


async def test_a_streamed_body_is_cut_off_once_it_passes_the_limit():
    chunks = [b"x" * 2**16] * 40  # 2.5 MiB, no declared length
    status, _, read = await post("/admin/login/", chunks)
    assert status == 413 and read == 17  # 17 chunks of 64 KiB pass 1 MiB; the rest never read


async def test_collect_answers_its_own_limit_in_json():
    status, body, _ = await post("/collect/", [b"{" * (COLLECT_BYTES + 1)])
    assert status == 413 and b'"too_large"' in body


async def test_only_staff_may_send_a_model_sized_upload():
    chunks = [b"x" * 2**20] * 3
    path = "/admin/offers/scoringmodel/add/"
    status, _, _ = await post(path, chunks)
    assert status == 413  # anonymous: the default limit

    def staff_cookie() -> str:
        client = Client()
        client.force_login(operator_user())
        return f"sessionid={client.cookies['sessionid'].value}"

    cookie = await sync_to_async(staff_cookie)()
    status, _, read = await post(path, chunks, cookie=cookie)
    assert read == 3 and status != 413  # read whole, then the form (and CSRF) decide
