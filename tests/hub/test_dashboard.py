"""The dashboard's pages over HTTP: what an admin and a user each see, what they may not,
and that no secret or unescaped input reaches a page."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import respx

from middleware.call import Call, Identity, Usage
from middleware.money import to_units
from tests.conftest import PROVIDER_KEY, USER, Hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio

BOB = "did:abt:bob"
PAGES = (
    "/dashboard",
    "/dashboard/calls",
    "/dashboard/keys",
    "/dashboard/rates",
    "/dashboard/accounts",
    "/dashboard/providers",
    "/playground",
)
ADMIN_PAGES = ("/dashboard/accounts", "/dashboard/providers")


def as_key(hub: Hub, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app),
        base_url="http://hub.test",
        headers={"authorization": f"Bearer {key}"},
    )


@pytest.fixture
async def bob(hub: Hub, mock_upstream: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    """Alice (an admin) and Bob (a user) have each made calls; Bob's key has a hostile name."""
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    await hub.admin.ensure_account(USER, is_admin=True)
    _, key = await hub.admin.create_key(BOB, name="<script>alert(1)</script>")
    await hub.admin.grant(BOB, to_units(1))
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    await hub.chat()
    client = as_key(hub, key)
    body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    await client.post(
        "/v1/chat/completions", json=body, headers={"x-aigne-hub-client-did": "app-b"}
    )
    yield client
    await client.aclose()


async def test_an_admin_sees_every_page_with_everyones_figures(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    pages = {path: await hub.client.get(path) for path in PAGES}

    assert {path: r.status_code for path, r in pages.items()} == dict.fromkeys(PAGES, 200)
    overview = pages["/dashboard"].text
    assert 'id="total-calls">2<' in overview and BOB in overview  # the "by user" table
    assert overview.count('<svg class="chart"') == 3
    calls = pages["/dashboard/calls"].text
    assert calls.count('<tr class="call') == 2 and "app-b" in calls
    assert "0.000015" in calls  # each call's credits: 9 x 0.000001 + 3 x 0.000002
    assert "mock" in pages["/dashboard/providers"].text
    assert f"{BOB}" in pages["/dashboard/accounts"].text


async def test_a_user_sees_only_their_own_and_no_admin_page(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    pages = {path: await bob.get(path) for path in PAGES}

    for path in ADMIN_PAGES:
        assert pages[path].status_code == 403 and "for the hub's admins" in pages[path].text
    calls = pages["/dashboard/calls"].text
    assert calls.count('<tr class="call') == 1 and USER not in calls
    # A user cannot widen the table to someone else by asking for them.
    theirs = await bob.get("/dashboard/calls", params={"user": USER})
    assert theirs.text.count('<tr class="call') == 1 and USER not in theirs.text
    assert 'id="total-calls">1<' in pages["/dashboard"].text
    assert USER not in pages["/dashboard/keys"].text
    assert "Providers" not in pages["/dashboard"].text  # not offered in the navigation


async def test_pages_show_no_secret_and_escape_what_users_typed(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    pages = [await hub.client.get(path) for path in PAGES]
    text = "".join(p.text for p in pages)

    assert PROVIDER_KEY not in text and hub.key not in text
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


async def test_the_calls_table_filters_pages_and_exports(hub: Hub, bob: httpx.AsyncClient) -> None:
    for _ in range(51):
        await hub.chat()
    first = await hub.client.get("/dashboard/calls", params={"user": USER})
    second = await hub.client.get("/dashboard/calls", params={"user": USER, "page": 2})
    failed = await hub.client.get("/dashboard/calls", params={"status": "failed"})
    by_app = await hub.client.get("/dashboard/calls", params={"app": "app-b"})

    assert first.text.count('<tr class="call') == 50 and "Older" in first.text
    assert second.text.count('<tr class="call') == 2 and "Older" not in second.text
    assert "No calls match" in failed.text
    assert by_app.text.count('<tr class="call') == 1
    export = first.text.split('href="/api/admin/calls?', 1)[1].split('"', 1)[0]
    csv = await hub.client.get("/api/admin/calls?" + export.replace("&amp;", "&"))
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.strip().splitlines()) == 1 + 52  # a header and every one of Alice's


async def test_rates_can_be_set_per_million_tokens_exactly(hub: Hub) -> None:
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)
    saved = await hub.client.put(
        "/api/admin/rates",
        json=[{"model": "mock/gpt-4o", "input": "0.15", "output": "0.6", "per": "million"}],
    )
    page = await hub.client.get("/dashboard/rates")

    rate = {r["model"]: r for r in saved.json()}["mock/gpt-4o"]
    # Divided exactly, and written out in full: never "1.5E-7".
    assert (rate["input_rate"], rate["output_rate"]) == ("0.00000015", "0.0000006")
    assert "0.15" in page.text and "0.6" in page.text


async def test_a_browser_is_sent_to_sign_in_and_the_root_to_the_overview(hub: Hub) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://hub.test"
    ) as anonymous:
        page = await anonymous.get("/dashboard/calls", headers={"accept": "text/html"})
    root = await hub.client.get("/")

    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fdashboard%2Fcalls"
    assert root.status_code == 303 and root.headers["location"] == "/dashboard"


async def test_accounts_show_grants_and_only_spent_accounts_are_out_of_credit(
    hub: Hub, bob: httpx.AsyncClient
) -> None:
    await hub.admin.grant(BOB, -to_units(1))  # Bob had credit and it is gone
    await hub.admin.ensure_account("did:abt:never-granted")
    overview = (await hub.client.get("/dashboard")).text
    accounts = (await hub.client.get("/api/admin/accounts")).json()
    bobs_keys = (await hub.client.get("/dashboard/keys", params={"user": BOB})).text

    out = overview.split("Out of credit", 1)[1].split("</section>", 1)[0]
    assert BOB in out and "never-granted" not in out and USER not in out
    assert {a["did"]: a["granted"] for a in accounts}[BOB] == "0"  # 1 granted, 1 taken back
    assert "&lt;script&gt;" in bobs_keys and "test</td>" not in bobs_keys  # Bob's key only


async def test_a_user_sees_their_usage_by_app(hub: Hub, bob: httpx.AsyncClient) -> None:
    overview = (await bob.get("/dashboard")).text
    assert "By app" in overview and "app-b" in overview and "By user" not in overview


async def test_the_24h_window_holds_every_call_of_the_last_24_hours(hub: Hub) -> None:
    await hub.admin.ensure_account(USER, is_admin=True)
    account_id = (await hub.store.find_account(USER) or (0, False))[0]
    now = time.time()
    for hours_ago in (0.1, 23.5, 24.5):  # the last is outside the window
        call = Call(
            identity=Identity(account_id=account_id, user_did=USER),
            call_type="chatCompletion",
            model="mock/gpt-4o-mini",
            body={},
            raw_body=b"",
            started_at=now - hours_ago * 3600,
        )
        call.usage, call.charge, call.status = Usage(4, 2), 5, "success"
        await hub.store.open_call(call)
        await hub.store.settle(call)
    await anyio.sleep(0.3)
    overview = (await hub.client.get("/dashboard", params={"window": "24h"})).text
    api = (
        await hub.client.get("/api/admin/usage", params={"by": "total", "since": now - 86400})
    ).json()

    assert 'id="total-calls">2<' in overview
    assert sum(e["calls"] for e in api["data"]) == 2  # per day: the window may span two
