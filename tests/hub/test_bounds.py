"""Values from outside stay within what the ledger and both databases can hold: refused
with a 400 naming the field (or by the CLI and the settings file with the same rule), and a
call whose charge cannot be written is recorded failed, never left `processing`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx

from examples.fake_provider import REPLY
from hub.bounds import MAX_BALANCE, MAX_CALL_TOKENS, MAX_TOKEN_RATE
from hub.settings import ConfigError, load_settings
from hub.store import SqlStore
from hub.store.admin import Admin
from middleware.money import credits_text, to_units
from middleware.ports import SettleRefused
from tests.conftest import USER, Hub, live_hub, make_settings, start_hub
from tests.hub.test_cli import Cli, write_config
from tests.hub.test_proxy import completion
from tests.hub.test_store import a_call

pytestmark = pytest.mark.anyio

BOB = "did:abt:bob"
MOCK = "mock/gpt-4o-mini"


@pytest.fixture
async def admin_hub(hub: Hub) -> Hub:
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    return hub


async def send(client: httpx.AsyncClient, method: str, route: str, body: Any) -> httpx.Response:
    """JSON as a client may write it: a lone surrogate as its escape (`"\\ud800"`)."""
    content = json.dumps(body)  # ensure_ascii: surrogates go as escapes, as on the wire
    headers = {"content-type": "application/json"}
    return await client.request(method, route, content=content, headers=headers)


def refused(response: httpx.Response, param: str) -> bool:
    error = response.json()["error"]
    return response.status_code == 400 and error["param"] == param


async def ledger_whole(hub: Hub, did: str) -> dict[str, int]:
    ledger = await hub.admin.ledger(did)
    assert ledger["balance"] == ledger["granted"] - ledger["metered"]
    assert isinstance(ledger["balance"], int)
    return ledger


# -- grants: the balance stays within its bound, on both databases ----------------------


async def test_a_grant_past_int64_is_refused_and_the_pages_still_work(admin_hub: Hub) -> None:
    api = admin_hub.client

    huge = await api.post("/api/admin/grants", json={"user": BOB, "amount": "922337203.6854775807"})
    one = await api.post("/api/admin/grants", json={"user": BOB, "amount": "1"})
    pages = [await api.get(p) for p in ("/api/admin/accounts", "/dashboard", "/dashboard/accounts")]

    assert refused(huge, "amount")
    assert one.status_code == 200 and one.json()["balance"] == "1"
    assert [p.status_code for p in pages] == [200, 200, 200]
    assert (await ledger_whole(admin_hub, BOB))["balance"] == to_units(1)


async def test_a_grant_that_would_take_a_balance_past_its_bound_writes_nothing(
    admin_hub: Hub,
) -> None:
    api = admin_hub.client
    top = credits_text(MAX_BALANCE)

    filled = await api.post("/api/admin/grants", json={"user": BOB, "amount": top})
    over = await api.post("/api/admin/grants", json={"user": BOB, "amount": "0.0000000001"})
    bottom = await api.post("/api/admin/grants", json={"user": BOB, "amount": f"-{top}"})
    bottom = await api.post("/api/admin/grants", json={"user": BOB, "amount": f"-{top}"})
    under = await api.post("/api/admin/grants", json={"user": BOB, "amount": "-0.0000000001"})
    back = await api.post("/api/admin/grants", json={"user": BOB, "amount": "1"})
    accounts = await api.get("/api/admin/accounts")

    assert filled.status_code == 200 and filled.json()["balance"] == top
    assert refused(over, "amount") and "past" in over.json()["error"]["message"]
    assert bottom.json()["balance"] == f"-{top}"
    assert refused(under, "amount")
    assert back.json()["balance"] == f"-{credits_text(MAX_BALANCE - to_units(1))}"
    assert accounts.status_code == 200
    ledger = await ledger_whole(admin_hub, BOB)
    assert ledger["balance"] == ledger["granted"] == -MAX_BALANCE + to_units(1)
    assert len(await admin_hub.admin.list_grants(BOB)) == 4


def test_the_cli_refuses_a_grant_past_the_bound_with_the_apis_words(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(write_config(tmp_path, db_url), capsys)
    cli.json("credits", "grant", BOB, credits_text(MAX_BALANCE))

    code, _, err = cli.run("credits", "grant", BOB, "1")
    too_big, _, err_too_big = cli.run("credits", "grant", BOB, "922337203.6854775807")

    assert code == 1 and "past" in err
    assert too_big == 1 and "'amount' must be at most 100000000 credits" in err_too_big
    ledger = cli.json("credits", "balance", BOB)
    assert ledger["balance"] == ledger["granted"] == credits_text(MAX_BALANCE)


# -- rates: bounded, and written all or none ---------------------------------------------


@pytest.mark.parametrize(
    ("entry", "param"),
    [
        ({"input": "100000000", "output": "0"}, "input"),  # the 1e8 credits a token
        ({"input": "0", "output": "0.0100000001"}, "output"),
        ({"input": "10000.0001", "output": "0", "per": "million"}, "input"),
        ({"input": "0", "output": "0", "cached": "-1"}, "cached"),
        ({"input": "1e999999", "output": "0"}, "input"),
        ({"input": "0", "image": "1000.1", "type": "imageGeneration"}, "image"),
        ({"input": "0", "output": "0", "model": "mock/\ud800"}, "model"),
    ],
)
async def test_a_rate_out_of_bounds_is_refused_and_nothing_is_written(
    admin_hub: Hub, entry: dict[str, Any], param: str
) -> None:
    good = {"model": "mock/first", "input": "0.000001", "output": "0.000002"}

    answer = await send(
        admin_hub.client, "PUT", "/api/admin/rates", [good, {"model": MOCK, **entry}]
    )

    assert refused(answer, param)
    assert answer.json()["error"]["message"].startswith("Rate 1: ")
    assert [r["model"] for r in await admin_hub.admin.list_rates()] == [MOCK]


async def test_rates_at_the_bound_are_taken(admin_hub: Hub) -> None:
    top = credits_text(MAX_TOKEN_RATE)
    answer = await admin_hub.client.put(
        "/api/admin/rates",
        json=[
            {"model": "mock/a", "input": top, "output": top, "cached": top, "cache_write": top},
            {"model": "mock/b", "input": "10000", "output": "10000", "per": "million"},
            {"model": "mock/i", "type": "imageGeneration", "input": top, "image": "1000"},
        ],
    )

    assert answer.status_code == 200
    rates = {r["model"]: r for r in answer.json()}
    assert rates["mock/a"]["output_rate"] == rates["mock/b"]["output_rate"] == top
    assert rates["mock/i"]["image_rate"] == "1000"


async def test_a_rates_put_that_the_database_fails_halfway_applies_nothing(
    admin_hub: Hub,
) -> None:
    entries = [
        {"model": "mock/first", "input": "0.000001", "output": "0.000002"},
        {"model": "mock/poison", "input": "0.000001", "output": "0.000002"},
    ]

    async with refuse_rows(admin_hub, "ai_model_rates", "NEW.model = 'mock/poison'"):
        try:
            answer = await admin_hub.client.put("/api/admin/rates", json=entries)
            status = answer.status_code
        except Exception:  # no last-resort handler in this branch: the app raises
            status = 500

    assert status >= 400
    assert [r["model"] for r in await admin_hub.admin.list_rates()] == [MOCK]


def test_the_cli_sets_rates_by_the_same_rule(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(write_config(tmp_path, db_url), capsys)

    code, _, err = cli.run("rates", "set", MOCK, "--input", "100000000", "--output", "0")
    per_million, _, _ = cli.run(
        "rates", "set", MOCK, "--input", "10001", "--output", "0", "--per-million"
    )
    at_bound = cli.json("rates", "set", MOCK, "--input", "10000", "--output", "0", "--per-million")

    assert code == 1 and "'input' must be at most 0.01 credits per token" in err
    assert per_million == 1
    assert at_bound["input_rate"] == credits_text(MAX_TOKEN_RATE)
    assert len(cli.json("rates", "list")) == 1


# -- text and whole numbers the databases cannot take: a 400, not a 500 ------------------


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/api/admin/grants", {"user": "did:\ud800", "amount": "1"}, "user"),
        ("/api/admin/grants", {"user": BOB, "amount": "1", "note": "a\ud800b"}, "note"),
        ("/api/admin/grants", {"user": BOB, "amount": 10**30}, "amount"),
        ("/api/admin/grants", {"user": BOB, "amount": True}, "amount"),
        ("/api/admin/keys", {"user": "\udfff"}, "user"),
        ("/api/admin/keys", {"user": BOB, "name": "laptop \ud800"}, "name"),
        ("/api/admin/keys", {"user": BOB, "app": "\ud800"}, "app"),
        ("/api/admin/keys", {"user": BOB, "expires_days": 10**400}, "expires_days"),
        ("/api/user/keys", {"name": "\ud800"}, "name"),
        ("/api/admin/credentials", {"provider": "mock", "key": "sk-1", "weight": 2**31}, "weight"),
        ("/api/admin/credentials", {"provider": "mock", "key": "sk-1", "weight": 2**70}, "weight"),
        ("/api/admin/credentials", {"provider": "mock", "key": "sk-1\r\nX-Evil: 1"}, "key"),
        ("/api/admin/credentials", {"provider": "mock", "key": "sk-\x7f"}, "key"),
        ("/api/admin/credentials", {"provider": "mock", "key": "sk-\ud800"}, "key"),
        ("/api/admin/credentials", {"provider": "\ud800", "key": "sk-1"}, "provider"),
    ],
)
async def test_a_value_the_database_cannot_hold_is_a_400_naming_it(
    admin_hub: Hub, route: str, body: dict[str, Any], param: str
) -> None:
    answer = await send(admin_hub.client, "POST", route, body)

    assert refused(answer, param), answer.text
    assert await admin_hub.admin.list_credentials() == []
    assert (await ledger_whole(admin_hub, BOB))["granted"] == 0


def test_the_cli_refuses_a_provider_key_with_a_line_break_and_a_weight_past_int32(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, db_url)
    with open(config, "a") as file:
        file.write('[providers.openai]\napi_key = "sk-config"\n')
    cli = Cli(config, capsys)

    broken, _, broken_err = cli.run("credentials", "add", "openai", "--key", "sk-1\r\nX-Evil: 1")
    heavy, _, heavy_err = cli.run(
        "credentials", "add", "openai", "--key", "sk-1", "--weight", str(2**31)
    )

    assert broken == 1 and "visible ASCII" in broken_err and "X-Evil" not in broken_err
    assert heavy == 1 and "'--weight' must be a whole number" in heavy_err
    assert cli.json("credentials", "list") == []


@pytest.mark.parametrize(
    "keys",
    ['api_key = "sk-one\\r\\nX-Evil: 1"', 'api_keys = ["sk-ok", {key = "sk two", weight = 5}]'],
)
def test_a_provider_key_that_cannot_be_a_header_is_refused_at_load(
    tmp_path: Path, keys: str
) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(f"[providers.openai]\n{keys}\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})

    assert caught.value.key.startswith("providers.openai.api_key")
    assert "visible ASCII" in str(caught.value)
    assert "Evil" not in str(caught.value) and "two" not in str(caught.value)


def test_a_provider_key_from_the_environment_with_a_line_break_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env={"GEMINI_API_KEY": "AIza-key\n"})

    assert caught.value.key == "GEMINI_API_KEY"
    assert "AIza" not in str(caught.value)


# -- charges: billed exactly at the bound, or recorded failed; never left processing -----


async def set_top_rate(hub: Hub) -> None:
    await hub.admin.set_rate(
        MOCK, "chatCompletion", input_rate=MAX_TOKEN_RATE, output_rate=MAX_TOKEN_RATE
    )


async def test_a_call_at_the_top_rate_is_billed_exactly(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    await set_top_rate(hub)
    mock_upstream.post("/chat/completions").respond(
        json=completion(MAX_CALL_TOKENS - 10, 10)  # the most one call may be billed for
    )

    answer = await hub.chat()

    assert answer.status_code == 200
    [call] = await hub.calls()
    assert (call["status"], call["credits"]) == ("success", MAX_CALL_TOKENS * MAX_TOKEN_RATE)
    ledger = await ledger_whole(hub, USER)
    assert ledger["balance"] == to_units(10) - MAX_CALL_TOKENS * MAX_TOKEN_RATE


async def test_a_live_call_at_the_top_rate_is_answered_and_billed_what_the_provider_counted(
    db_url: str,
) -> None:
    # Item 3 through a real server: at the highest rate the hub takes, a call is answered
    # and its charge is written, to the unit, for the tokens the fake provider reported.
    prompt = "What is the highest rate worth"
    async with live_hub(
        db_url, ("fake/gpt-4o-mini",), rates=(MAX_TOKEN_RATE, MAX_TOKEN_RATE)
    ) as live:
        async with live.client() as client:
            answer = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "fake/gpt-4o-mini",
                    "messages": [{"role": "user", "content": prompt}],
                },
            )
        call = await live.wait_for_call(status="success")
        balance = (await live.admin.ledger(USER))["balance"]

    reported = answer.json()["usage"]
    assert answer.status_code == 200
    assert (reported["prompt_tokens"], reported["completion_tokens"]) == (
        len(prompt.split()),
        len(REPLY.split()),
    )
    charge = (reported["prompt_tokens"] + reported["completion_tokens"]) * MAX_TOKEN_RATE
    assert call["credits"] == charge and call["usage_estimated"] is False
    assert balance == to_units(5) - charge


async def test_a_charge_past_the_bound_is_recorded_failed_and_alerted(
    hub: Hub, mock_upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    await set_top_rate(hub)
    # More tokens than an INTEGER column holds, and a charge past the bound of one call.
    mock_upstream.post("/chat/completions").respond(json=completion(2**31, 3))

    with caplog.at_level(logging.ERROR, logger="aigne_hub.model_call"):
        answer = await hub.chat()
    metrics = (await hub.client.get("/metrics")).text

    assert answer.status_code == 200
    [call] = await hub.calls()
    assert (call["status"], call["error_code"], call["credits"]) == ("failed", "settle_refused", 0)
    assert (await ledger_whole(hub, USER))["balance"] == to_units(10)
    assert any(call["id"] in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "aigne_hub_settle_refused_total 1" in metrics


async def test_a_settle_the_database_refuses_is_not_retried_or_left_processing(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))

    async with refuse_rows(hub, "model_calls", "NEW.credits > 0"):
        with anyio.fail_after(3):  # the retries of a passing failure take 4.3 s
            answer = await hub.chat()
            await hub.chat()

    assert answer.status_code == 200
    calls = await hub.calls()
    assert [(c["status"], c["error_code"]) for c in calls] == [("failed", "settle_refused")] * 2
    assert all("refused" in c["error_message"] for c in calls)
    assert (await ledger_whole(hub, USER))["balance"] == to_units(10)


async def test_a_charge_that_would_take_a_balance_past_its_floor_is_refused(
    db_url: str,
) -> None:
    store = SqlStore(db_url, sqlite_synchronous="NORMAL")
    await store.open()
    try:
        admin = Admin(store)
        account = await admin.ensure_account(USER)
        await admin.grant(USER, -MAX_BALANCE)  # the lowest a grant may take it
        billed, refused_call = a_call(account, 0), a_call(account, 1)
        billed.usage = None

        await store.settle(billed)
        with pytest.raises(SettleRefused):
            await store.settle(refused_call)

        rows = {row["id"]: row for row in await admin.list_calls()}
        ledger = await admin.ledger(USER)
    finally:
        await store.close()

    refused_row = rows[refused_call.id]
    assert (refused_row["status"], refused_row["error_code"]) == ("failed", "settle_refused")
    assert refused_row["credits"] == 0
    assert ledger == {"balance": -MAX_BALANCE, "granted": -MAX_BALANCE, "metered": 0}


@pytest.mark.parametrize("model", ["mock/gpt\ud800", "mock/gpt\u0000"])
async def test_a_model_name_the_record_cannot_hold_is_refused(
    db_url: str, mock_upstream: respx.MockRouter, model: str
) -> None:
    # Self-hosted: no rate is needed, so any name under a provider would reach the record.
    settings = make_settings(db_url, mode="self-hosted")
    hub = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    route = mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    try:
        with anyio.fail_after(3):
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            answer = await send(hub.client, "POST", "/v1/chat/completions", body)
        calls = await hub.calls()
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    assert answer.status_code == 400 and answer.json()["error"]["param"] == "model"
    assert calls == [] and not route.called


async def test_a_provider_error_the_record_cannot_hold_is_recorded_cleaned(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    # A provider's message is the caller's error and the record's reason: NUL and a lone
    # surrogate in it must not leave the call unwritable (stuck `processing`).
    settings = make_settings(db_url, mode="self-hosted")
    hub = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    message = r"bad\u0000request \ud800 " + "x" * 5000  # JSON escapes, decoded upstream
    mock_upstream.post("/chat/completions").respond(
        400,
        content=b'{"error": {"message": "' + message.encode() + b'", "type": "invalid"}}',
        headers={"content-type": "application/json"},
    )
    try:
        with anyio.fail_after(3):
            body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            answer = await send(hub.client, "POST", "/v1/chat/completions", body)
        [call] = await hub.calls()
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    assert answer.status_code == 400
    assert call["status"] == "failed"
    reason = call["error_message"]
    assert "\x00" not in reason and "\ud800" not in reason and len(reason) <= 1000


@asynccontextmanager
async def refuse_rows(hub: Hub, table: str, when: str) -> AsyncIterator[None]:
    """Make the database refuse rows of `table` matching `when`, as a constraint would,
    until the block ends (PostgreSQL's test database outlives the test)."""
    db = hub.store.database
    events = ("INSERT", "UPDATE")
    if hub.store.is_sqlite:
        for event in events:
            await db.execute(
                f"CREATE TRIGGER refuse_{event} BEFORE {event} ON {table} "
                f"WHEN {when} BEGIN SELECT RAISE(ABORT, 'refused by a test'); END"
            )
    else:
        await db.execute(
            "CREATE OR REPLACE FUNCTION refuse_rows() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'refused by a test' USING ERRCODE = 'check_violation'; END "
            "$$ LANGUAGE plpgsql"
        )
        for event in events:
            await db.execute(
                f"CREATE TRIGGER refuse_{event} BEFORE {event} ON {table} "
                f"FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION refuse_rows()"
            )
    try:
        yield
    finally:
        for event in events:
            on = "" if hub.store.is_sqlite else f" ON {table}"
            await db.execute(f"DROP TRIGGER refuse_{event}{on}")
