"""Spend caps through the hub: 402 `budget_exceeded` naming the cap and when it resets, set
by the admin API (keys and accounts), the user API (own keys, only narrower), the CLI and
the keys page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
import respx

from hub.store.budgets import period_end
from middleware.money import to_units
from tests.conftest import USER, Hub
from tests.hub.test_cli import Cli, write_config
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio

BOB = "did:abt:bob"
# What one call of completion(9, 3) costs at the test hub's rate (0.000001 in, 0.000002 out).
ONE_CALL = to_units("0.000015")


def _client(hub: Hub, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app),
        base_url="http://hub.test",
        headers={"authorization": f"Bearer {key}"},
    )


async def _chat(api: httpx.AsyncClient) -> httpx.Response:
    body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return await api.post("/v1/chat/completions", json={**body, "max_tokens": 3})


def _iso(epoch: float | None) -> str:
    assert epoch is not None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_key_over_its_cap_gets_402_naming_the_cap_and_its_reset(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    await hub.admin.ensure_account(USER, is_admin=True)
    made = await hub.client.post(
        "/api/admin/keys", json={"user": BOB, "budget": "0.00001", "period": "week"}
    )
    await hub.admin.grant(BOB, to_units(1))
    assert made.status_code == 201
    assert (made.json()["budget"], made.json()["period"]) == ("0.00001", "week")
    sent = mock_upstream.routes[0]

    async with _client(hub, made.json()["key"]) as bob:
        first = await _chat(bob)  # admitted: nothing spent or held yet
        upstream_calls = sent.call_count
        refused = await _chat(bob)

    assert first.status_code == 200
    assert refused.status_code == 402
    error = refused.json()["error"]
    resets = _iso(period_end("week", datetime.now(UTC).timestamp()))
    assert error["code"] == "budget_exceeded"
    assert "key's budget of 0.00001 credits per week" in error["message"]
    assert "0.000015 spent" in error["message"] and resets in error["message"]
    assert refused.headers["x-budget-reset"] == resets
    assert sent.call_count == upstream_calls  # nothing went upstream
    assert len(await hub.calls(user_did=BOB)) == 1  # nor was recorded


async def test_an_account_cap_set_by_the_admin_api_refuses_every_key(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    await hub.admin.ensure_account(USER, is_admin=True)
    await hub.admin.grant(BOB, to_units(1))
    _, one = await hub.admin.create_key(BOB)
    _, two = await hub.admin.create_key(BOB)
    set_cap = await hub.client.put(
        f"/api/admin/accounts/{BOB}/budget", json={"budget": "0.00002", "period": "life"}
    )
    assert set_cap.status_code == 200
    assert set_cap.json() == {
        "user_did": BOB,
        "budget": "0.00002",
        "period": "life",
        "spent": "0",
        "resets_at": None,
    }

    async with _client(hub, one) as first, _client(hub, two) as second:
        answers = [await _chat(first), await _chat(second), await _chat(first)]
    assert [a.status_code for a in answers] == [200, 200, 402]
    error = answers[2].json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "account's budget of 0.00002 credits in all" in error["message"]
    assert "never resets" in error["message"] and "x-budget-reset" not in answers[2].headers
    [bob] = [a for a in (await hub.client.get("/api/admin/accounts")).json() if a["did"] == BOB]
    assert (bob["budget"], bob["spent"]) == ("0.00002", "0.00003")


async def test_the_admin_api_sets_and_clears_a_key_cap(hub: Hub) -> None:
    await hub.admin.ensure_account(USER, is_admin=True)
    key_id, _ = await hub.admin.create_key(BOB)
    put = await hub.client.put(
        f"/api/admin/keys/{key_id}/budget", json={"budget": 5, "period": "day"}
    )
    [listed] = (await hub.client.get("/api/admin/keys", params={"user": BOB})).json()
    cleared = await hub.client.put(f"/api/admin/keys/{key_id}/budget", json={"budget": None})
    missing = await hub.client.put("/api/admin/keys/key_nope/budget", json={"budget": 1})
    bad = [
        await hub.client.put(f"/api/admin/keys/{key_id}/budget", json=body)
        for body in ({"budget": 0}, {"budget": "x"}, {"budget": 1, "period": "year"}, {})
    ]

    assert put.status_code == 200 and put.json()["budget"] == "5" and put.json()["period"] == "day"
    assert (listed["budget"], listed["period"], listed["spent"]) == ("5", "day", "0")
    assert listed["resets_at"] == period_end("day", datetime.now(UTC).timestamp())
    assert cleared.status_code == 200 and cleared.json()["budget"] is None
    assert missing.status_code == 404
    assert [b.status_code for b in bad] == [400, 400, 400, 400]
    assert [b.json()["error"]["param"] for b in bad] == ["budget", "budget", "period", None]


async def test_a_user_may_only_narrow_the_cap_of_their_own_keys(hub: Hub) -> None:
    _, bob_key = await hub.admin.create_key(BOB)
    others, _ = await hub.admin.create_key("did:abt:carol")
    async with _client(hub, bob_key) as bob:
        made = await bob.post("/api/user/keys", json={"budget": "2", "period": "month"})
        key_id = made.json()["id"]
        path = f"/api/user/keys/{key_id}/budget"
        lowered = await bob.put(path, json={"budget": "1", "period": "month"})
        raised = await bob.put(path, json={"budget": "3", "period": "month"})
        repurposed = await bob.put(path, json={"budget": "1", "period": "day"})
        cleared = await bob.put(path, json={"budget": None})
        not_mine = await bob.put(f"/api/user/keys/{others}/budget", json={"budget": "1"})
        listed = {k["id"]: k for k in (await bob.get("/api/user/keys")).json()}

    assert made.status_code == 201 and made.json()["budget"] == "2"
    assert lowered.status_code == 200 and lowered.json()["budget"] == "1"
    for refused in (raised, repurposed, cleared):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "budget_not_narrower"
    assert not_mine.status_code == 404
    assert (listed[key_id]["budget"], listed[key_id]["period"]) == ("1", "month")


async def test_the_keys_page_shows_a_key_cap_and_its_spend(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    key_id = (await hub.admin.list_keys(USER))[0]["id"]
    put = await hub.client.put(f"/api/user/keys/{key_id}/budget", json={"budget": "0.5"})
    await anyio.sleep(0.3)  # key records are cached for 0.2 s in these tests
    assert (await hub.chat(max_tokens=3)).status_code == 200
    page = (await hub.client.get("/dashboard/keys")).text

    assert put.status_code == 200
    resets = datetime.fromtimestamp(period_end("month", datetime.now(UTC).timestamp()), UTC)
    assert "0.5 per month" in page and "0.000015 spent" in page
    assert f"resets {resets:%Y-%m-%d %H:%M:%S} UTC" in page
    assert f'data-api="/api/user/keys/{key_id}/budget"' in page


def test_the_cli_sets_key_and_account_caps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}"), capsys)
    made = cli.json("keys", "create", "--user", BOB, "--budget", "5", "--period", "month")
    assert (made["budget"], made["period"], made["spent"]) == ("5", "month", "0")
    key_id = made["id"]

    changed = cli.json("keys", "budget", key_id, "--budget", "2.5", "--period", "week")
    [listed] = cli.json("keys", "list", "--user", BOB)
    cleared = cli.json("keys", "budget", key_id, "--clear")
    account = cli.json("budgets", "set", BOB, "--budget", "100", "--period", "week")
    shown = cli.json("budgets", "show", BOB)
    gone = cli.json("budgets", "clear", BOB)
    code, _, err = cli.run("keys", "budget", key_id, "--budget", "0")
    no_key_code, _, no_key = cli.run("keys", "budget", "key_nope", "--budget", "1")
    neither, _, neither_err = cli.run("keys", "budget", key_id)

    assert (changed["budget"], changed["period"]) == ("2.5", "week")
    assert (listed["budget"], listed["period"]) == ("2.5", "week")
    assert cleared["budget"] is None
    assert (account["budget"], account["period"]) == ("100", "week")
    assert shown == account
    assert gone["budget"] is None and gone["period"] is None
    assert code == 1 and "'budget' must be more than 0" in err
    assert no_key_code == 1 and "no key with id key_nope" in no_key
    assert neither == 1 and "--clear" in neither_err


async def test_the_accounts_page_shows_and_sets_an_account_cap(hub: Hub) -> None:
    await hub.admin.ensure_account(USER, is_admin=True)
    await hub.client.put(f"/api/admin/accounts/{BOB}/budget", json={"budget": "7", "period": "day"})
    page = (await hub.client.get("/dashboard/accounts")).text

    assert "7 per day" in page and "0 spent" in page
    assert 'data-api="/api/admin/accounts/did%3Aabt%3Abob/budget"' in page
