"""The credit check: no credit, no call — and nothing recorded for it."""

from __future__ import annotations

import httpx
import pytest
import respx

from middleware.money import to_units
from tests.conftest import USER, Hub, make_settings, start_hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("balance", ["0", "-0.5"])
async def test_zero_or_negative_balance_is_a_402_with_no_call(
    hub: Hub, mock_upstream: respx.MockRouter, balance: str
) -> None:
    route = mock_upstream.post("/chat/completions").respond(json=completion())
    await hub.admin.grant(USER, to_units(balance) - to_units(10))

    response = await hub.chat()

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert await hub.calls() == []
    assert not route.called


async def test_unpriced_model_is_refused_not_given_away(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    route = mock_upstream.post("/chat/completions").respond(json=completion())

    response = await hub.chat(model="mock/gpt-5-unpriced")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_priced"
    assert not route.called and await hub.calls() == []


async def test_self_hosted_mode_records_calls_at_zero_credits(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion(10, 5))
    hub = await start_hub(
        make_settings(db_url, mode="self-hosted"), httpx.MockTransport(mock_upstream.async_handler)
    )
    try:
        await hub.admin.grant(USER, -to_units(10))  # no credit at all: billing is off

        response = await hub.chat(model="mock/any-unpriced-model")

        assert response.status_code == 200
        [call] = await hub.calls()
        assert call["status"] == "success" and call["credits"] == 0
        assert call["input_tokens"] == 10
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()
