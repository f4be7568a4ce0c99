"""Managing the hub over HTTP: admins manage everything, users their own keys only."""

from __future__ import annotations

import anyio
import httpx
import pytest
import respx
from itsdangerous import URLSafeTimedSerializer

from middleware.auth import SESSION_COOKIE
from tests.conftest import PROVIDER_KEY, USER, Hub

pytestmark = pytest.mark.anyio

BOB = "did:abt:bob"


@pytest.fixture
async def admin_hub(hub: Hub) -> Hub:
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    return hub


def client(hub: Hub, key: str | None = None, **headers: str) -> httpx.AsyncClient:
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://hub.test", headers=headers
    )


async def test_an_admin_creates_keys_grants_credit_and_sets_rates(admin_hub: Hub) -> None:
    api = admin_hub.client
    created = await api.post("/api/admin/keys", json={"user": BOB, "name": "bob's laptop"})
    carols = await api.post("/api/admin/keys", json={"user": "did:abt:carol", "admin": True})
    granted = await api.post("/api/admin/grants", json={"user": BOB, "amount": "2.5"})
    rates = await api.put(
        "/api/admin/rates",
        json=[
            {"model": "mock/gpt-4o", "input": "0.0000025", "output": "0.00001"},
            {
                "model": "mock/claude",
                "input": "3",
                "output": "15",
                "cache_write": "3.75",
                "per": "million",
            },
            {"model": "mock/img", "type": "imageGeneration", "input": "0", "image": "0.04"},
        ],
    )
    accounts = (await api.get("/api/admin/accounts")).json()
    keys = (await api.get("/api/admin/keys", params={"user": BOB})).json()

    assert created.status_code == 201 and created.json()["key"].startswith("ahk_")
    assert granted.json()["balance"] == "2.5"
    by_model = {r["model"]: r for r in rates.json()}
    assert by_model["mock/gpt-4o"]["output_rate"] == "0.00001"
    assert by_model["mock/img"]["image_rate"] == "0.04"
    assert by_model["mock/claude"]["cache_write_rate"] == "0.00000375"
    assert {a["did"]: a["balance"] for a in accounts}[BOB] == "2.5"
    roles = {a["did"]: a["is_admin"] for a in accounts}
    assert carols.status_code == 201 and roles["did:abt:carol"] and not roles[BOB]
    assert [k["name"] for k in keys] == ["bob's laptop"]
    assert created.json()["key"] not in str(keys)  # shown once, stored as a hash

    async with client(admin_hub, created.json()["key"]) as bob:
        balance = (await bob.get("/api/user/balance")).json()
    assert balance["balance"] == "2.5"


async def test_a_bad_rate_in_a_bulk_update_changes_nothing(admin_hub: Hub) -> None:
    response = await admin_hub.client.put(
        "/api/admin/rates",
        json=[
            {"model": "mock/a", "input": "0.1", "output": "0.2"},
            {"model": "mock/b", "input": "-0.1", "output": "0.2"},
        ],
    )

    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    rates = (await admin_hub.client.get("/api/admin/rates")).json()
    assert "mock/a" not in {r["model"] for r in rates}


async def test_users_manage_their_own_keys_and_nothing_else(admin_hub: Hub) -> None:
    _, bob_key = await admin_hub.admin.create_key(BOB)
    alice_keys = (await admin_hub.client.get("/api/user/keys")).json()
    async with client(admin_hub, bob_key) as bob:
        made = (await bob.post("/api/user/keys", json={"name": "ci"})).json()
        mine = (await bob.get("/api/user/keys")).json()
        theirs = await bob.delete(f"/api/user/keys/{alice_keys[0]['id']}")
        forbidden = [
            await bob.get("/api/admin/accounts"),
            await bob.post("/api/admin/grants", json={"user": BOB, "amount": "100"}),
            await bob.put("/api/admin/rates", json=[]),
            await bob.get("/api/admin/credentials"),
        ]
        revoked = await bob.delete(f"/api/user/keys/{made['id']}")

    assert {k["user_did"] for k in mine} == {BOB} and len(mine) == 2
    assert theirs.status_code == 404  # another user's key does not exist for bob
    assert {r.status_code for r in forbidden} == {403}
    assert revoked.json()["revoked"] is True
    assert (await admin_hub.admin.ledger(BOB))["granted"] == 0


async def test_provider_keys_are_write_only_and_shown_masked(admin_hub: Hub) -> None:
    secret = "sk-added-over-http-00000009"
    added = await admin_hub.client.post(
        "/api/admin/credentials", json={"provider": "mock", "key": secret, "weight": 50}
    )
    listed = await admin_hub.client.get("/api/admin/credentials")
    removed = await admin_hub.client.delete(f"/api/admin/credentials/{added.json()['id']}")

    assert added.status_code == 201 and added.json()["masked"] == "sk-a...0009"
    assert secret not in added.text + listed.text
    assert PROVIDER_KEY not in listed.text
    assert removed.json()["removed"] is True


async def test_a_session_must_send_json_to_change_anything(admin_hub: Hub) -> None:
    cookie = URLSafeTimedSerializer("test-secret", salt="aigne-hub-session").dumps([USER, None, 0])
    async with client(admin_hub, cookie=f"{SESSION_COOKIE}={cookie}") as browser:
        forged = await browser.post(
            "/api/admin/grants",
            content=b'{"user": "did:abt:x", "amount": "5"}',
            headers={"content-type": "text/plain"},  # what a cross-site form can send
        )
        honest = await browser.post("/api/admin/grants", json={"user": BOB, "amount": "1"})

    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf"
    assert honest.status_code == 200


async def test_bad_bodies_are_clear_400s(admin_hub: Hub) -> None:
    api = admin_hub.client
    bad_json = await api.post(
        "/api/admin/grants", content=b"{", headers={"content-type": "application/json"}
    )
    no_user = await api.post("/api/admin/grants", json={"amount": "1"})
    bad_amount = await api.post("/api/admin/grants", json={"user": BOB, "amount": "lots"})

    assert (bad_json.status_code, bad_json.json()["error"]["code"]) == (400, "invalid_json")
    assert no_user.json()["error"]["param"] == "user"
    assert bad_amount.json()["error"]["param"] == "amount"


async def test_a_wrong_method_is_a_json_405(admin_hub: Hub) -> None:
    response = await admin_hub.client.patch("/api/admin/rates")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_a_user_gets_403_from_every_admin_route_and_method(admin_hub: Hub) -> None:
    from starlette.routing import Route

    from hub.routes import build_router

    app = admin_hub.app
    router = build_router(app.store, app.registry, app.settings, app.metrics)
    admin_routes = [
        (method, route.path.replace("{", "").replace("}", ""))  # any id will do
        for route in router.routes
        if isinstance(route, Route) and route.path.startswith("/api/admin/")
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]
    _, bob_key = await admin_hub.admin.create_key(BOB)
    async with client(admin_hub, bob_key) as bob:
        answers = {
            (method, path): await bob.request(method, path, json={"user": BOB, "amount": "9"})
            for method, path in admin_routes
        }

    assert len(admin_routes) >= 12  # accounts, keys, grants, rates, credentials, calls, ...
    assert {k: r.status_code for k, r in answers.items()} == dict.fromkeys(answers, 403)
    assert (await admin_hub.admin.ledger(BOB))["granted"] == 0


async def test_a_rate_can_be_removed_and_a_zero_grant_is_refused(admin_hub: Hub) -> None:
    api = admin_hub.client
    removed = await api.delete("/api/admin/rates", params={"model": "mock/gpt-4o-mini"})
    again = await api.delete("/api/admin/rates", params={"model": "mock/gpt-4o-mini"})
    refused_call = await admin_hub.chat()
    zero = await api.post("/api/admin/grants", json={"user": BOB, "amount": "0"})

    assert removed.json()["removed"] is True and again.status_code == 404
    assert refused_call.json()["error"]["code"] == "model_not_priced"
    assert (zero.status_code, zero.json()["error"]["param"]) == (400, "amount")
    assert (await api.get("/api/admin/grants", params={"user": BOB})).json()["data"] == []


async def test_key_fields_the_store_cannot_hold_are_400s_not_500s(admin_hub: Hub) -> None:
    api = admin_hub.client
    bodies = [
        {"user": BOB, "expires_days": 1e12},  # past any calendar
        {"user": BOB, "expires_days": True},
        {"user": BOB, "name": {"a": 1}},
        {"user": BOB, "name": "x" * 201},
        {"user": BOB, "app": "nul\u0000"},
        {"user": "did:" + "x" * 300},
    ]
    answers = [await api.post("/api/admin/keys", json=body) for body in bodies]
    note = await api.post("/api/admin/grants", json={"user": BOB, "amount": "1", "note": [1]})

    assert [r.status_code for r in answers] == [400] * len(bodies)
    assert [r.json()["error"]["param"] for r in answers] == [
        "expires_days",
        "expires_days",
        "name",
        "name",
        "app",
        "user",
    ]
    assert note.status_code == 400
    assert (await api.get("/dashboard/keys")).status_code == 200


async def test_providers_report_their_keys_masked_and_their_health(
    admin_hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(503, json={"error": {"message": "down"}})
    await admin_hub.chat()  # the provider's only key cools down after a 503
    report = await admin_hub.client.get("/api/admin/providers")

    [mock] = report.json()
    assert (mock["name"], mock["kind"], mock["health"]) == ("mock", "openai", "degraded")
    assert mock["credentials"][0]["masked"] == "sk-p...6789"
    assert mock["credentials"][0]["state"].startswith("cooling down")
    assert (mock["last_hour"]["calls"], mock["last_hour"]["errors"]) == (1, 1)
    assert PROVIDER_KEY not in report.text
