"""/api/user/* shows the caller their own calls and money; /api/admin/* is for admins."""

from __future__ import annotations

import csv
import io
import re

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
    # Which operator key served the call (even masked) is not the caller's to see.
    assert "credential" not in calls["data"][0] and "account_id" not in calls["data"][0]


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


async def test_a_user_reads_their_own_grants_and_meter_events(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    grants = (await bob.get("/api/user/grants")).json()
    events = (await bob.get("/api/user/meter-events")).json()
    calls = (await bob.get("/api/user/calls")).json()
    await bob.aclose()

    assert [(g["user_did"], g["amount"]) for g in grants["data"]] == [(BOB, "1")]
    # One ledger row per billed call, pointing at the call and taking what it cost.
    assert [(e["user_did"], e["call_id"], e["amount"]) for e in events["data"]] == [
        (BOB, calls["data"][0]["id"], "0.000015")
    ]


async def test_admins_read_every_ledger_and_users_cannot(hub: Hub, bob: httpx.AsyncClient) -> None:
    refused = [await bob.get(p) for p in ("/api/admin/meter-events", "/api/admin/grants")]
    await bob.aclose()
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)
    events = (await hub.client.get("/api/admin/meter-events")).json()["data"]
    bobs_grants = (await hub.client.get("/api/admin/grants", params={"user": BOB})).json()

    assert {r.status_code for r in refused} == {403}
    assert sorted(e["user_did"] for e in events) == [USER, USER, BOB]
    assert [g["user_did"] for g in bobs_grants["data"]] == [BOB]


async def test_usage_breaks_down_by_user_app_or_not_at_all(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    await bob.aclose()
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)
    by_user = (await hub.client.get("/api/admin/usage", params={"by": "user"})).json()["data"]
    total = (await hub.client.get("/api/admin/usage", params={"by": "total"})).json()["data"]
    bad = await hub.client.get("/api/admin/usage", params={"by": "colour"})

    assert {r["user"]: r["calls"] for r in by_user} == {USER: 2, BOB: 1}
    assert [(r["calls"], r["credits"], r["error_rate"]) for r in total] == [(3, "0.000045", 0.0)]
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "by")


async def test_a_csv_export_holds_every_matching_call_not_one_page(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    for _ in range(3):
        await bob.post(
            "/v1/chat/completions",
            json={"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        )
    exported = await bob.get("/api/user/calls", params={"format": "csv"})
    page = (await bob.get("/api/user/calls", params={"limit": 2})).json()
    await bob.aclose()

    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 4 and "credential" not in rows[0]
    # For spreadsheets: times in ISO 8601 UTC, booleans as true/false.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rows[0]["request_at"])
    assert rows[0]["stream"] == "false"
    assert len(page["data"]) == 2 and page["next_offset"] == 2


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/user/calls?limit=%C2%B2", "limit"),  # a digit int() refuses
        ("/api/user/grants?offset=abc", "offset"),
        ("/api/user/usage?since=nan", "since"),
        ("/api/user/calls?until=inf", "until"),
        ("/dashboard/calls?page=%C2%B2", "page"),
    ],
)
async def test_bad_query_parameters_are_400s_naming_them(
    hub: Hub, bob: httpx.AsyncClient, path: str, param: str
) -> None:
    await bob.aclose()
    response = await hub.client.get(path)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


async def test_nul_in_a_filter_is_a_400_and_huge_offsets_are_empty_pages(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    await bob.aclose()
    nul = [
        await hub.client.get(p)
        for p in ("/api/user/calls?request_id=%00", "/dashboard/calls?model=a%00b")
    ]
    far = await hub.client.get("/api/user/calls", params={"offset": "99999999999"})

    assert [r.status_code for r in nul] == [400, 400]
    assert far.status_code == 200 and far.json()["data"] == []


async def test_a_csv_export_cannot_smuggle_a_formula_into_a_spreadsheet(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    await bob.post(
        "/v1/chat/completions",
        json={"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-aigne-hub-client-did": '=HYPERLINK("http://evil.example")'},
    )
    exported = await bob.get(
        "/api/user/calls", params={"format": "csv", "app": '=HYPERLINK("http://evil.example")'}
    )
    await bob.aclose()

    [row] = list(csv.DictReader(io.StringIO(exported.text)))
    assert row["app_did"] == '\'=HYPERLINK("http://evil.example")'
