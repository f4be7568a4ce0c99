"""/api/user/* shows the caller their own calls and money; /api/admin/* is for admins."""

from __future__ import annotations

import csv
import io

import anyio
import httpx
import pytest
import respx

from middleware.money import to_units
from tests.conftest import USER, Hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio

BOB = "did:abt:bob"


async def as_key(hub: Hub, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app),
        base_url="http://hub.test",
        headers={"authorization": f"Bearer {key}"},
    )


@pytest.fixture
async def bob(hub: Hub, mock_upstream: respx.MockRouter) -> httpx.AsyncClient:
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    _, key = await hub.admin.create_key(BOB)
    await hub.admin.grant(BOB, to_units(1))
    client = await as_key(hub, key)
    for _ in range(2):
        await hub.chat()  # alice
    await client.post(
        "/v1/chat/completions",
        json={"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    return client


async def test_a_user_sees_their_own_balance_and_calls_only(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    balance = (await bob.get("/api/user/balance")).json()
    calls = (await bob.get("/api/user/calls")).json()
    await bob.aclose()

    per_call = 9 * 10_000 + 3 * 20_000
    assert balance == {
        "user_did": BOB,
        "balance": str(1 - per_call / 10**10),
        "granted": "1",
        "metered": "0.000015",
    }
    assert [c["user_did"] for c in calls["data"]] == [BOB]
    assert calls["data"][0]["credits"] == "0.000015" and calls["next_offset"] is None


async def test_calls_are_paginated(hub: Hub, bob: httpx.AsyncClient) -> None:
    await bob.aclose()
    first = (await hub.client.get("/api/user/calls", params={"limit": 1})).json()
    second = (
        await hub.client.get("/api/user/calls", params={"limit": 1, "offset": first["next_offset"]})
    ).json()

    assert first["next_offset"] == 1
    assert first["data"][0]["id"] != second["data"][0]["id"]


async def test_usage_aggregates_calls_tokens_credits_and_latency(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    await bob.aclose()
    usage = (await hub.client.get("/api/user/usage", params={"group": "hour"})).json()

    [row] = usage["data"]
    assert usage["group"] == "hour" and row["model"] == "mock/gpt-4o-mini"
    assert (row["calls"], row["errors"], row["input_tokens"]) == (2, 0, 18)
    assert row["credits"] == "0.00003"
    assert row["latency_ms"]["p50"] is not None and row["ttfb_ms"]["p95"] is not None


async def test_admin_routes_refuse_users_and_serve_admins(hub: Hub, bob: httpx.AsyncClient) -> None:
    refused = await bob.get("/api/admin/calls")
    await bob.aclose()
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    everyone = (await hub.client.get("/api/admin/calls")).json()
    bobs = await hub.client.get("/api/admin/calls", params={"user": BOB, "format": "csv"})

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only"
    assert {c["user_did"] for c in everyone["data"]} == {USER, BOB}
    rows = list(csv.DictReader(io.StringIO(bobs.text)))
    assert bobs.headers["content-type"].startswith("text/csv")
    assert [r["user_did"] for r in rows] == [BOB] and rows[0]["credits"] == "0.000015"


async def test_the_api_needs_a_key(hub: Hub) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://hub.test"
    ) as anonymous:
        response = await anonymous.get("/api/user/calls")
    assert response.status_code == 401
