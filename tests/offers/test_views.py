from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from offers.runtime import Runtime
from offers.tokens import issue_token

pytestmark = pytest.mark.django_db


def post(client: Client, body: Any, origin: str | None = None) -> Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"Origin": origin} if origin else {}
    return client.post(
        "/collect/", data=data, content_type="text/plain;charset=UTF-8", headers=headers
    )


def beacon(
    site: str = "demo", session: str = "s-1", events: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "site": site,
        "token": issue_token(session, site),
        "events": events
        if events is not None
        else [
            {"id": "e-1", "event": "add_to_cart", "props": {"product_id": "sku-1", "price": 10}},
            {"id": "e-2", "event": "visibility", "props": {"state": "hidden"}},
        ],
    }


async def _state(runtime: Runtime, session: str):
    return await runtime.store.get(session)


@pytest.mark.usefixtures("demo_site")
def test_collect_applies_the_last_events_and_answers_202(client: Client, runtime: Runtime):
    response = post(client, beacon(), origin="https://anywhere.example")
    assert response.status_code == 202
    assert response.json() == {"ack": ["e-1", "e-2"], "errors": []}
    assert response["Access-Control-Allow-Origin"] == "https://anywhere.example"
    from asgiref.sync import async_to_sync

    state = async_to_sync(_state)(runtime, "s-1")
    assert state is not None and state.cart_value == 10 and state.hidden
    again = post(client, beacon())
    assert again.json()["ack"] == ["e-1", "e-2"]
    assert async_to_sync(_state)(runtime, "s-1").cart_value == 10


@pytest.mark.usefixtures("demo_site")
def test_collect_reports_bad_events_and_keeps_the_good_ones(client: Client):
    events = [
        {"id": "e-1", "event": "search", "props": {"query": "x"}},
        {"id": "e-2", "event": "search", "props": {"query": 1}},
        {"id": "e-3", "event": "nope"},
    ]
    response = post(client, beacon(events=events))
    assert response.status_code == 202
    body = response.json()
    assert body["ack"] == ["e-1"]
    assert [(e["code"], e["id"]) for e in body["errors"]] == [
        ("invalid_props", "e-2"),
        ("unknown_event", "e-3"),
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("{", "bad_json"),
        ({"site": "demo"}, "bad_frame"),
        ({"site": "demo", "token": "t", "events": [{}] * 101}, "bad_frame"),
        ({"site": "demo", "token": "t", "events": [], "extra": 1}, "bad_frame"),
    ],
)
@pytest.mark.usefixtures("demo_site")
def test_collect_refuses_malformed_bodies_with_400(client: Client, body, error):
    response = post(client, body)
    assert response.status_code == 400
    assert response.json()["error"] == error


@pytest.mark.usefixtures("demo_site")
def test_collect_refuses_a_body_over_64_kib(client: Client):
    body = beacon(events=[{"id": "e", "event": "search", "props": {"query": "x" * 70_000}}])
    response = post(client, body)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


@pytest.mark.usefixtures("demo_site", "strict_site")
def test_collect_refuses_an_unknown_site_a_bad_origin_and_a_forged_token(client: Client):
    assert post(client, beacon(site="nope")).status_code == 403
    strict = beacon(site="strict")
    assert post(client, strict, origin="https://evil.example").json()["error"] == "origin"
    assert post(client, strict, origin="https://shop.example").status_code == 202
    forged = beacon() | {"token": beacon()["token"] + "x"}
    response = post(client, forged)
    assert response.status_code == 403 and response.json()["error"] == "bad_token"
    other_site = beacon() | {"token": issue_token("s-1", "strict")}
    assert post(client, other_site).status_code == 403


@pytest.mark.usefixtures("demo_site")
def test_collect_takes_only_post(client: Client):
    assert client.get("/collect/").status_code == 405


@pytest.mark.usefixtures("demo_site")
def test_collect_rate_limits_each_session(client: Client, runtime: Runtime):
    runtime.limits.session_burst, runtime.limits.session_rate = 2, 0.001
    events = [{"id": f"e-{i}", "event": "heartbeat"} for i in range(3)]
    body = post(client, beacon(events=events)).json()
    assert body["ack"] == ["e-0", "e-1"]
    assert [(e["code"], e["id"]) for e in body["errors"]] == [("rate_limited", "e-2")]


def test_healthz_answers_200_when_the_database_does(client: Client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mode": "embedded", "database": "ok"}


@pytest.mark.usefixtures("demo_site")
def test_metrics_counts_events_by_outcome(client: Client):
    post(
        client, beacon(events=[{"id": "e-1", "event": "heartbeat"}, {"id": "e-2", "event": "nope"}])
    )
    text = client.get("/metrics").content.decode()
    assert "liveoffers_events_received_total" in text
    assert 'liveoffers_events_refused_total{code="unknown_event"}' in text
    assert "liveoffers_live_sessions" in text and "liveoffers_open_sockets" in text


def test_metrics_can_require_a_bearer_token(client: Client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_the_demo_shop_lists_products(client: Client, demo_site):
    from offers.models import Product

    Product.objects.create(site=demo_site, sku="sku-1", name="Espresso machine", price="249.00")
    response = client.get("/")
    assert response.status_code == 200
    assert b"Espresso machine" in response.content


@pytest.mark.parametrize(
    "body",
    [
        b'{"site":"demo","token":"t","events":[{"id":"\xff","event":"heartbeat"}]}',
        b'{"site":"de\xffmo","token":"t","events":[]}',
        b"[" * 15_000,
        b'{"site":"demo","token":"t","events":[' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"site":"demo","token":"t","events":[],"x":'
        + b'{"a":' * 3000
        + b"1"
        + b"}" * 3000
        + b"}",
        b'{"site":"demo","token":"t","events":[{"id":"e","event":"add_to_cart","props":{"product_id":"a","price":NaN}}]}',
        b'{"site":"demo\\u0000","token":"t","events":[]}',
        b'{"site":"d\\ud800","token":"t","events":[]}',
        b'{"site":1e999,"token":"t","events":[]}',
        b"",
        b"\x00\x01\x02",
    ],
)
@pytest.mark.usefixtures("demo_site")
def test_collect_answers_any_bad_body_with_a_4xx_json_error(client: Client, body):
    response = post(client, body)
    assert 400 <= response.status_code < 500, response.content
    assert response.json()["error"]


@pytest.mark.usefixtures("demo_site")
def test_collect_answers_generated_garbage_with_4xx(client: Client):
    import random

    from tests.hostile import hostile_bodies

    for body in hostile_bodies(random.Random(8), 600):
        response = post(client, body)
        assert 400 <= response.status_code < 500, (body[:200], response.status_code)
        assert response.json()["error"]


@pytest.mark.usefixtures("demo_site")
def test_collect_refuses_a_declared_length_over_64_kib_before_reading(client: Client):
    response = client.post(
        "/collect/",
        data=b"{}",
        content_type="text/plain",
        CONTENT_LENGTH=str(10**9),
    )
    assert response.status_code == 413 and response.json()["error"] == "too_large"
