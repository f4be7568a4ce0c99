"""Keys limited to some models (`openai/*`-style patterns): 403 `model_not_allowed` for the
others, before anything is recorded or sent upstream; their model listing shows only those
they may call. Made by the admin API, the user API and the CLI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import respx

from hub.cli import main
from hub.settings import ProviderSettings
from middleware.money import to_units
from tests.conftest import PROVIDER_KEY, UPSTREAM, USER, Hub, make_settings, start_hub
from tests.hub.test_aigne_protocol import chat_body
from tests.hub.test_cli import write_config
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio

BOB = "did:abt:bob"
OTHER = ProviderSettings("other", "openai", UPSTREAM, (PROVIDER_KEY,), ("gpt-4o-mini",))


@pytest.fixture
async def two_providers(db_url: str, mock_upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    """A hub serving `mock/...` and `other/...` (both priced); its key (alice's) is an
    admin's, and may call every model."""
    settings = make_settings(db_url, more_providers=(OTHER,))
    started = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    await started.admin.set_rate(
        "other/gpt-4o-mini",
        "chatCompletion",
        input_rate=to_units("0.000001"),
        output_rate=to_units("0.000002"),
    )
    await started.admin.ensure_account(USER, is_admin=True)
    await started.admin.grant(BOB, to_units(10), "test grant")
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    yield started
    await started.client.aclose()
    await started.app.shutdown()


def client(hub: Hub, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app),
        base_url="http://hub.test",
        headers={"authorization": f"Bearer {key}"},
    )


async def chat(api: httpx.AsyncClient, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi"}]}
    return await api.post("/v1/chat/completions", json=body)


async def listed(api: httpx.AsyncClient, path: str = "/v1/models") -> list[str]:
    return [m["id"] for m in (await api.get(path)).json()["data"]]


async def test_a_key_limited_by_the_admin_api_calls_only_its_models(
    two_providers: Hub, mock_upstream: respx.MockRouter
) -> None:
    created = await two_providers.client.post(
        "/api/admin/keys", json={"user": BOB, "models": ["mock/*"]}
    )
    assert created.status_code == 201 and created.json()["models"] == ["mock/*"]
    upstream = mock_upstream.routes[0]

    async with client(two_providers, created.json()["key"]) as bob:
        allowed = await chat(bob, "mock/gpt-4o-mini")
        sent_upstream = upstream.call_count
        refused = await chat(bob, "other/gpt-4o-mini")
        aigne_body = chat_body()
        aigne_body["input"]["modelOptions"]["model"] = "other/gpt-4o-mini"
        refused_aigne = await bob.post("/api/v2/chat", json=aigne_body)
        models = await listed(bob)
        v2_models = await listed(bob, "/api/v2/models")
        status = (await bob.get("/api/v2/status", params={"model": "other/gpt-4o-mini"})).json()

    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert refused.json()["error"]["param"] == "model"
    assert "other/gpt-4o-mini" in refused.json()["error"]["message"]
    assert refused_aigne.status_code == 403
    # Nothing was sent upstream, recorded or charged for the refused calls.
    assert upstream.call_count == sent_upstream
    calls = await two_providers.calls()
    assert [c["model"] for c in calls] == ["mock/gpt-4o-mini"]
    assert models == v2_models == ["mock/gpt-4o-mini"]
    assert status["available"] is False
    [key] = (await two_providers.client.get("/api/admin/keys", params={"user": BOB})).json()
    assert key["models"] == ["mock/*"]
    keys_page = (await two_providers.client.get("/dashboard/keys")).text
    assert "<code>mock/*</code>" in keys_page and "every model" in keys_page


async def test_a_key_without_patterns_calls_and_lists_every_model(two_providers: Hub) -> None:
    mine = two_providers.client
    assert (await chat(mine, "other/gpt-4o-mini")).status_code == 200
    assert (await chat(mine, "mock/gpt-4o-mini")).status_code == 200
    assert await listed(mine) == ["mock/gpt-4o-mini", "other/gpt-4o-mini"]
    keys = (await mine.get("/api/user/keys")).json()
    assert [k["models"] for k in keys] == [None]


async def test_a_user_narrows_a_key_of_their_own(two_providers: Hub) -> None:
    _, bob_key = await two_providers.admin.create_key(BOB)
    async with client(two_providers, bob_key) as bob:
        made = await bob.post(
            "/api/user/keys", json={"name": "ci", "models": "*/gpt-4o-mini, mock/x"}
        )
        mine = (await bob.get("/api/user/keys")).json()
    assert made.status_code == 201
    assert {k["id"]: k["models"] for k in mine}[made.json()["id"]] == ["*/gpt-4o-mini", "mock/x"]

    async with client(two_providers, made.json()["key"]) as narrowed:
        assert (await chat(narrowed, "other/gpt-4o-mini")).status_code == 200
        refused = await chat(narrowed, "mock/gpt-4o")
        assert await listed(narrowed) == ["mock/gpt-4o-mini", "other/gpt-4o-mini"]
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


async def test_a_session_opened_with_a_scoped_key_is_scoped_too(two_providers: Hub) -> None:
    # Pasting a scoped key into the sign-in form must not widen it: the playground calls
    # the model routes with the session cookie.
    created = await two_providers.client.post(
        "/api/admin/keys", json={"user": BOB, "models": ["mock/*"]}
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=two_providers.app), base_url="http://hub.test"
    ) as browser:
        signed_in = await browser.post("/login", data={"key": created.json()["key"]})
        assert signed_in.status_code == 303
        allowed = await chat(browser, "mock/gpt-4o-mini")
        refused = await chat(browser, "other/gpt-4o-mini")
        models = await listed(browser)

    assert allowed.status_code == 200
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert models == ["mock/gpt-4o-mini"]


@pytest.mark.parametrize(
    "models",
    [[], "", [1], "mock/*\x00", ["a" * 201], [f"mock/{i}" for i in range(51)], {"a": 1}],
)
async def test_bad_patterns_are_refused_naming_models(two_providers: Hub, models: object) -> None:
    by_admin = await two_providers.client.post(
        "/api/admin/keys", json={"user": BOB, "models": models}
    )
    by_user = await two_providers.client.post("/api/user/keys", json={"models": models})

    for answer in (by_admin, by_user):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == "models"
    keys = (await two_providers.client.get("/api/admin/keys")).json()
    assert len(keys) == 1  # the fixture's own: no key was made


def test_cli_keys_create_with_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}")
    assert main(["db", "upgrade", "--create", "--config", config]) == 0
    argv = ["keys", "create", "--user", BOB, "--config", config]
    capsys.readouterr()

    made = main([*argv, "--models", "mock/*", "--models", "other/a,other/b", "--json"])
    created = json.loads(capsys.readouterr().out)
    refused = main([*argv, "--models", "bad\x01"])
    error = capsys.readouterr().err
    assert main(["keys", "list", "--config", config, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)

    assert made == 0 and created["models"] == ["mock/*", "other/a", "other/b"]
    assert refused == 1 and "--models" in error
    assert [k["models"] for k in listing] == [["mock/*", "other/a", "other/b"]]
