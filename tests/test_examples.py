"""The examples do what their docstrings promise: the mounted stack, and the openai SDK client."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from examples.fake_provider import REPLY, FakeProvider
from examples.mount_middlewares import MODEL, build_app
from hub.app import create_app
from hub.store import SqlStore
from hub.store.admin import Admin
from tests.conftest import USER, LiveServer, make_settings

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BROKE = "did:abt:broke"
# Per word, in integer units: small round numbers make the expected charge easy to read.
INPUT_RATE = 1_000
OUTPUT_RATE = 3_000


def chat_body(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You repeat things."},
            {"role": "user", "content": text},
        ],
    }


class Mounted:
    def __init__(self, client: httpx.AsyncClient, admin: Admin, key: str, broke_key: str):
        self.client = client
        self.admin = admin
        self.key = key
        self.broke_key = broke_key

    async def chat(self, key: str | None, text: str = "hello there echo model") -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return await self.client.post("/v1/chat/completions", json=chat_body(text), headers=headers)


@pytest.fixture
async def mounted(tmp_path: Path) -> AsyncIterator[Mounted]:
    app, store = build_app(f"sqlite:///{tmp_path / 'mounted.db'}")
    # ASGITransport sends no lifespan events, so the store is opened here instead.
    await store.open()
    admin = Admin(store)
    _, key = await admin.create_key(USER)
    await admin.grant(USER, 10**10)
    _, broke_key = await admin.create_key(BROKE)
    await admin.set_rate(MODEL, "chatCompletion", input_rate=INPUT_RATE, output_rate=OUTPUT_RATE)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://echo.test") as client:
        yield Mounted(client, admin, key, broke_key)
    await store.close()


async def test_mounted_echo_refuses_a_request_without_a_key(mounted: Mounted) -> None:
    response = await mounted.chat(None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    assert await mounted.admin.list_calls() == []


async def test_mounted_echo_answers_and_the_call_is_billed_by_word_count(
    mounted: Mounted,
) -> None:
    response = await mounted.chat(mounted.key, "hello there echo model")
    assert response.status_code == 200
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == "hello there echo model"
    # "You repeat things." + "hello there echo model" in, the echo out.
    assert answer["usage"]["prompt_tokens"] == 3 + 4
    [call] = await mounted.admin.list_calls()
    assert call["status"] == "success" and call["user_did"] == USER and call["model"] == MODEL
    assert (call["input_tokens"], call["output_tokens"]) == (7, 4)
    assert call["credits"] == 7 * INPUT_RATE + 4 * OUTPUT_RATE
    ledger = await mounted.admin.ledger(USER)
    assert ledger["balance"] == 10**10 - call["credits"]


async def test_mounted_echo_refuses_an_empty_balance_and_records_nothing(
    mounted: Mounted,
) -> None:
    response = await mounted.chat(mounted.broke_key)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert await mounted.admin.list_calls() == []


async def test_mounted_echo_opens_its_store_under_uvicorn(tmp_path: Path) -> None:
    # Under a real server the Starlette lifespan must get through all five middlewares.
    url = f"sqlite:///{tmp_path / 'served.db'}"
    store = SqlStore(url)
    await store.open()
    admin = Admin(store)
    _, key = await admin.create_key(USER)
    await admin.grant(USER, 10**10)
    await admin.set_rate(MODEL, "chatCompletion", input_rate=INPUT_RATE, output_rate=OUTPUT_RATE)
    await store.close()
    app, _ = build_app(url)
    with LiveServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            response = await client.post(
                "/v1/chat/completions",
                json=chat_body("served for real"),
                headers={"authorization": f"Bearer {key}"},
            )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "served for real"


async def _settled_calls(admin: Admin, count: int) -> list[dict[str, Any]]:
    """The hub settles a call just after its response, from its own thread: wait for it."""
    deadline = time.monotonic() + 10
    while True:
        calls = await admin.list_calls(limit=100)
        if len(calls) >= count and all(c["status"] != "processing" for c in calls):
            return calls
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} settled calls; found {calls}")
        await anyio.sleep(0.05)


async def test_openai_chat_example_streams_then_calls_through_the_hub(db_url: str) -> None:
    store = SqlStore(db_url)
    await store.open()
    admin = Admin(store)
    _, key = await admin.create_key(USER)
    await admin.grant(USER, 10**10)
    await admin.set_rate(
        "fake/gpt-4o-mini", "chatCompletion", input_rate=10_000, output_rate=20_000
    )
    try:
        with LiveServer(FakeProvider()) as upstream:
            settings = make_settings(db_url, provider="fake", base_url=upstream.url + "/v1")
            with LiveServer(create_app(settings)) as hub:
                env = {
                    **os.environ,
                    "AIGNE_HUB_URL": hub.url + "/v1",
                    "AIGNE_HUB_KEY": key,
                    "NO_PROXY": "127.0.0.1",
                }
                with anyio.fail_after(60):
                    done = await anyio.run_process(
                        [sys.executable, str(EXAMPLES / "openai_chat.py")], env=env, check=False
                    )
                output = done.stdout.decode()
                assert done.returncode == 0, output + done.stderr.decode()
                calls = await _settled_calls(admin, 2)
    finally:
        await store.close()

    assert output.count(REPLY) == 2  # once streamed, once whole
    printed = re.findall(r"usage: (\d+) prompt tokens, (\d+) completion tokens", output)
    assert len(printed) == 2
    assert sorted(c["stream"] for c in calls) == [False, True]
    for call in calls:
        assert call["status"] == "success" and call["model"] == "fake/gpt-4o-mini"
        assert call["output_tokens"] == len(REPLY.split()) and call["input_tokens"] > 0
        assert call["credits"] == call["input_tokens"] * 10_000 + call["output_tokens"] * 20_000
        # What the SDK was told is what the hub billed.
        assert (str(call["input_tokens"]), str(call["output_tokens"])) in printed


async def test_openai_chat_example_explains_a_missing_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIGNE_HUB_KEY"}
    done = await anyio.run_process(
        [sys.executable, str(EXAMPLES / "openai_chat.py")], env=env, check=False
    )
    assert done.returncode == 2
    assert b"AIGNE_HUB_KEY" in done.stderr
