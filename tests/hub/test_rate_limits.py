"""Rate limits through the whole hub: 429 with Retry-After and OpenAI's headers, headers on
every answer, overrides per key and account (admin API, CLI), and the settings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import respx

from hub.settings import ConfigError, Settings, load_settings
from hub.store.admin import Admin
from middleware.limits import LimitPolicy
from middleware.ports import Quota
from tests.conftest import USER, Hub, make_settings, start_hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio

START_OF_A_MINUTE = 6_000_000.0  # a multiple of 60: a clock that stands still there


@pytest.fixture
async def limited(db_url: str, mock_upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    """A hub whose keys may make 2 calls a minute and use 50,000 tokens, its clock stopped
    at the start of a minute (so no window ends during the test)."""
    policy = LimitPolicy(key=Quota(rpm=2, tpm=50_000))
    settings = make_settings(db_url, rate_limits=policy)
    started = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    started.app.limiter.clock = lambda: START_OF_A_MINUTE  # type: ignore[union-attr]
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    yield started
    await started.client.aclose()
    await started.app.shutdown()


async def test_over_the_limit_is_429_with_retry_after_and_no_record(limited: Hub) -> None:
    first = await limited.chat(max_tokens=100)
    assert first.status_code == 200
    # On a success: where the caller stands, as OpenAI says it.
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert first.headers["x-ratelimit-limit-tokens"] == "50000"
    reserved = 50_000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert 100 < reserved < 200  # the prompt and max_tokens, before the usage was known
    second = await limited.chat(max_tokens=100)
    # The first call's reservation was corrected to its usage: 9 + 3 tokens.
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 50_000 - 12 - reserved

    refused = await limited.chat()
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
    assert "this API key: 2 requests per minute" in error["message"]
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # Refused before anything was recorded, held or billed.
    assert len(await limited.calls()) == 2

    metrics = (await limited.client.get("/metrics")).text
    assert 'aigne_hub_rate_limited_total{scope="key",limit="requests"} 1' in metrics


async def test_a_streamed_answer_carries_the_headers(
    limited: Hub, mock_upstream: respx.MockRouter
) -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'
    mock_upstream.post("/chat/completions").respond(
        content=chunk, headers={"content-type": "text/event-stream"}
    )
    answer = await limited.chat(stream=True)
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-remaining-requests"] == "1"


async def test_overrides_per_key_and_account_through_the_admin_api(limited: Hub) -> None:
    _, admin_key = await limited.admin.create_key("did:abt:root")
    await limited.admin.ensure_account("did:abt:root", is_admin=True)
    as_admin = {"authorization": f"Bearer {admin_key}"}
    keys = await limited.admin.list_keys(USER)
    key_id = keys[0]["id"]
    client = limited.client
    put = await client.put(
        f"/api/admin/keys/{key_id}/limits", json={"rpm": 5, "tpm": 0}, headers=as_admin
    )
    assert put.status_code == 200, put.text
    assert put.json() == {"id": key_id, "rpm": 5, "tpm": 0}
    statuses = [(await limited.chat()).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    answer = await limited.chat()
    assert "x-ratelimit-limit-tokens" not in answer.headers  # tpm 0: no token limit

    # The account's limit applies to all its keys, beside each key's.
    put = await client.put(f"/api/admin/accounts/{USER}/limits", json={"rpm": 1}, headers=as_admin)
    assert put.status_code == 200
    await client.put(f"/api/admin/keys/{key_id}/limits", json={"rpm": None}, headers=as_admin)
    listed = (await client.get("/api/admin/keys", headers=as_admin)).json()
    assert {(k["id"], k["rpm"], k["tpm"]) for k in listed} >= {(key_id, None, 0)}
    accounts = (await client.get("/api/admin/accounts", headers=as_admin)).json()
    assert [a["rpm"] for a in accounts if a["did"] == USER] == [1]

    bad = await client.put(f"/api/admin/keys/{key_id}/limits", json={"rpm": -1}, headers=as_admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm"
    missing = await client.put("/api/admin/keys/key_nope/limits", json={"rpm": 1}, headers=as_admin)
    assert missing.status_code == 404


async def test_a_new_key_made_with_limits(limited: Hub) -> None:
    _, admin_key = await limited.admin.create_key("did:abt:root")
    await limited.admin.ensure_account("did:abt:root", is_admin=True)
    made = await limited.client.post(
        "/api/admin/keys",
        json={"user": "did:abt:bob", "rpm": 1, "concurrent": 2},
        headers={"authorization": f"Bearer {admin_key}"},
    )
    assert made.status_code == 201, made.text
    await limited.admin.grant("did:abt:bob", 10**11)
    bob = {"authorization": f"Bearer {made.json()['key']}"}
    body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    first = await limited.client.post("/v1/chat/completions", json=body, headers=bob)
    second = await limited.client.post("/v1/chat/completions", json=body, headers=bob)
    assert (first.status_code, second.status_code) == (200, 429)


def test_settings_read_rate_limits_and_redis(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        "[rate_limits]\nkey = { rpm = 60, tpm = 100000 }\naccount = { concurrent = 4 }\n"
        '[rate_limits.models."openai/gpt-4o"]\nrpm = 500\n'
        '[redis]\nurl = "redis://127.0.0.1:6379/0"\non_error = "closed"\n'
    )
    settings = load_settings(config, env={})
    assert settings.rate_limits.key == Quota(rpm=60, tpm=100_000)
    assert settings.rate_limits.account == Quota(concurrent=4)
    assert settings.rate_limits.models == {"openai/gpt-4o": Quota(rpm=500)}
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.redis.on_error == "closed"
    config.write_text("[rate_limits]\nkey = { rpm = 0 }\n")
    with pytest.raises(ConfigError, match="rate_limits.key.rpm"):
        load_settings(config, env={})
    config.write_text('[redis]\non_error = "maybe"\n')
    with pytest.raises(ConfigError, match="redis.on_error"):
        load_settings(config, env={})


def test_several_workers_with_limits_and_no_redis_refuse_to_start(tmp_path: Path) -> None:
    from hub.app import create_app

    settings = make_settings(
        f"sqlite:///{tmp_path / 'hub.db'}", rate_limits=LimitPolicy(key=Quota(rpm=60)), workers=2
    )
    with pytest.raises(ConfigError, match="Set \\[redis\\] url"):
        create_app(settings)
    create_app(replace(settings, workers=1))  # one process counts exactly by itself


def test_cli_sets_limits_on_a_new_key_a_key_and_an_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.hub.test_cli import Cli, write_config

    monkeypatch.delenv("AIGNE_HUB_DATABASE_URL", raising=False)
    cli = Cli(write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}"), capsys)
    made = cli.json("keys", "create", "--user", USER, "--rpm", "60", "--tpm", "100000")
    (listed,) = cli.json("keys", "list")
    assert (listed["id"], listed["rpm"], listed["tpm"], listed["concurrent"]) == (
        made["id"],
        60,
        100_000,
        None,
    )
    changed = cli.json("keys", "limits", made["id"], "--rpm", "default", "--concurrent", "3")
    assert changed == {"id": made["id"], "rpm": None, "concurrent": 3}
    (listed,) = cli.json("keys", "list")
    assert (listed["rpm"], listed["tpm"], listed["concurrent"]) == (None, 100_000, 3)
    assert cli.json("limits", "--user", USER, "--tpm", "0") == {"user_did": USER, "tpm": 0}

    code, _, err = cli.run("keys", "limits", made["id"], "--rpm", "lots")
    assert code != 0 and "'rpm' must be a whole number" in err
    code, _, err = cli.run("keys", "limits", "key_nope", "--rpm", "1")
    assert code != 0 and "no key with id key_nope" in err


@pytest.mark.slow
async def test_a_hung_up_stream_gives_its_concurrency_slot_back(db_url: str) -> None:
    from tests.conftest import live_hub

    policy = LimitPolicy(key=Quota(concurrent=1))

    def settings_for(upstream: str) -> Settings:
        return make_settings(db_url, provider="fake", base_url=upstream + "/v1", rate_limits=policy)

    body = {"model": "fake/stall-model", "stream": True}
    body["messages"] = [{"role": "user", "content": "Tell me things"}]
    models = ("fake/stall-model", "fake/gpt-4o-mini")
    async with live_hub(db_url, models, settings_for=settings_for) as live:
        async with live.client() as client:
            async with client.stream("POST", "/v1/chat/completions", json=body) as stream:
                assert stream.status_code == 200
                await anext(stream.aiter_lines())
                # The stalled stream holds the key's one slot.
                busy = await client.post("/v1/chat/completions", json=body)
                assert busy.status_code == 429
                assert "this API key: 1 call at once" in busy.json()["error"]["message"]
                assert busy.headers["retry-after"] == "1"
            # Hung up: the slot comes back as soon as the hub has settled the call (the
            # in-process limiter has no expiry: only the release can give it back).
            await live.wait_for_call(status="failed", error_code="client_disconnected")
            deadline = time.monotonic() + 5
            while (
                again := await client.post(
                    "/v1/chat/completions",
                    json=body | {"model": "fake/gpt-4o-mini", "stream": False},
                )
            ).status_code == 429:
                assert time.monotonic() < deadline, "the slot never came back"
                await asyncio.sleep(0.05)
            assert again.status_code == 200


async def test_the_keys_and_accounts_pages_show_and_edit_the_limits(limited: Hub) -> None:
    await limited.admin.ensure_account(USER, is_admin=True)
    (key,) = await limited.admin.list_keys(USER)
    await limited.admin.set_key_limits(key["id"], {"rpm": 7, "tpm": 0})
    await limited.admin.set_account_limits(USER, {"concurrent": 3})
    keys_page = (await limited.client.get("/dashboard/keys")).text
    accounts_page = (await limited.client.get("/dashboard/accounts")).text
    # Each row's form puts to the admin API, filled with what is set (empty: the default).
    assert f'data-api="/api/admin/keys/{key["id"]}/limits" data-method="PUT"' in keys_page
    assert 'name="rpm" size="6" inputmode="numeric" placeholder="rpm"' in keys_page
    assert 'aria-label="requests per minute" value="7"' in keys_page
    assert 'aria-label="tokens per minute" value="0"' in keys_page
    assert 'aria-label="calls at once" value=""' in keys_page
    assert "/api/admin/accounts/did%3Aabt%3Aalice/limits" in accounts_page
    assert 'aria-label="calls at once" value="3"' in accounts_page


async def test_several_workers_without_redis_refuse_limits_kept_in_the_database(
    tmp_path: Path,
) -> None:
    from hub.app import create_app

    settings = make_settings(f"sqlite:///{tmp_path / 'hub.db'}", workers=2)
    app = create_app(settings)
    await app.startup()  # nothing limits anyone yet: several workers may count nothing
    key_id, _ = await Admin(app.store).create_key(USER, limits={"rpm": 5})
    await app.shutdown()
    again = create_app(settings)
    try:
        with pytest.raises(RuntimeError, match=r"rate limits .* 2 workers without Redis"):
            await again.startup()
    finally:
        await again.store.close()
        again.metrics.stop()
    assert key_id.startswith("key_")
