"""Auth: every bad-key case is a 401 with a JSON error; good keys and sessions get through."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
import respx
from itsdangerous import URLSafeTimedSerializer

from middleware.auth import SESSION_COOKIE
from tests.conftest import USER, Hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio


async def status_with(hub: Hub, headers: dict[str, str]) -> tuple[int, str | None]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://hub.test"
    ) as client:
        response = await client.post(
            "/v1/chat/completions",
            headers=headers,
            json={"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        )
    body = response.json()
    return response.status_code, body.get("error", {}).get("code")


async def test_missing_key(hub: Hub) -> None:
    assert await status_with(hub, {}) == (401, "missing_api_key")


@pytest.mark.parametrize("header", ["Bearer", "Bearer   "])
async def test_empty_bearer_is_a_missing_key(hub: Hub, header: str) -> None:
    assert await status_with(hub, {"authorization": header}) == (401, "missing_api_key")


@pytest.mark.parametrize("header", ["Basic abc", "Bearer sk-not-ours", "ahk_x"])
async def test_malformed_key(hub: Hub, header: str) -> None:
    assert await status_with(hub, {"authorization": header}) == (401, "malformed_api_key")


async def test_unknown_key(hub: Hub) -> None:
    unknown = {"authorization": "Bearer ahk_" + "x" * 40}
    assert await status_with(hub, unknown) == (401, "invalid_api_key")


async def test_revoked_key_stops_working_within_the_cache_time(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion())
    key_id, secret = await hub.admin.create_key(USER)
    headers = {"authorization": f"Bearer {secret}"}
    assert (await status_with(hub, headers))[0] == 200

    await hub.admin.revoke_key(key_id)
    await anyio.sleep(0.3)  # the hub under test caches keys for 0.2 s

    assert await status_with(hub, headers) == (401, "revoked_api_key")


async def test_expired_key(hub: Hub) -> None:
    _, secret = await hub.admin.create_key(USER, expires_at=time.time() - 1)
    assert await status_with(hub, {"authorization": f"Bearer {secret}"}) == (401, "expired_api_key")


async def test_rejected_requests_record_no_call(hub: Hub) -> None:
    await status_with(hub, {"authorization": "Bearer ahk_" + "y" * 40})
    assert await hub.calls() == []


async def test_signed_session_cookie_is_a_second_way_in(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion())
    cookie = URLSafeTimedSerializer("test-secret", salt="aigne-hub-session").dumps([USER, None, 0])

    ok = await status_with(hub, {"cookie": f"{SESSION_COOKIE}={cookie}"})
    forged = await status_with(hub, {"cookie": f"{SESSION_COOKIE}={cookie[:-2]}xx"})

    assert ok == (200, None)
    assert forged == (401, "invalid_session")
    [call] = await hub.calls()
    assert call["user_did"] == USER and call["api_key_id"] is None


async def test_x_api_key_is_a_second_way_to_send_the_key(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    # Anthropic's SDKs (and Claude Code with ANTHROPIC_API_KEY) send the key this way.
    mock_upstream.post("/chat/completions").respond(json=completion())
    _, secret = await hub.admin.create_key(USER)
    assert await status_with(hub, {"x-api-key": secret}) == (200, None)
    assert await status_with(hub, {"x-api-key": "ahk_" + "x" * 40}) == (401, "invalid_api_key")
    assert await status_with(hub, {"x-api-key": "sk-ant-theirs"}) == (401, "malformed_api_key")
    assert await status_with(hub, {"x-api-key": " "}) == (401, "missing_api_key")
    # The Bearer header wins when both are sent: a wrong x-api-key beside it is not read.
    both = {"authorization": f"Bearer {secret}", "x-api-key": "sk-ant-theirs"}
    assert await status_with(hub, both) == (200, None)
