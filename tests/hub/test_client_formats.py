"""The client-format seam: every layer's errors come out in the route's own format, a
route may take its model from the path, and unknown paths are a 404 before auth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

import hub.app
from hub.dialects.openai_chat import OpenAIChat
from hub.routes import MODEL_ROUTES
from middleware.limits import LimitPolicy
from middleware.money import to_units
from middleware.ports import Quota
from middleware.routing import Route, RouteTable
from tests.conftest import USER, Hub, make_settings, start_hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio


class BracketFormat(OpenAIChat):
    """A test-only client format: OpenAI chat requests and answers, but its own error shape
    (as Anthropic's `{"type":"error","error":{...}}` differs from OpenAI's)."""

    name = "bracket"
    native_kind = None  # rendered, not passed through

    def normalize(self, body: dict[str, Any], call_type: Any) -> dict[str, Any]:
        return {**body, "messages": [{"role": "user", "content": body["say"]}]}

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes:
        return json.dumps({"kind": "failure", "failure": {"status": status, "why": code}}).encode()


BRACKET = BracketFormat()
TEST_ROUTES = {
    **MODEL_ROUTES,
    "/bracket/chat": Route("chatCompletion", BRACKET),
    # The model in the path, slashes and all, as Gemini's routes have it.
    "/bracket/models/{model}:say": Route("chatCompletion", BRACKET),
}


@pytest.fixture
async def bracket_hub(
    db_url: str, mock_upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Hub]:
    monkeypatch.setattr(hub.app, "MODEL_ROUTE_TABLE", RouteTable(TEST_ROUTES))
    settings = make_settings(db_url, rate_limits=LimitPolicy(key=Quota(rpm=1)))
    started = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
    yield started
    await started.client.aclose()
    await started.app.shutdown()


def anonymous(started: Hub) -> httpx.AsyncClient:
    """A client that sends no key at all."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=started.app), base_url="http://hub.test"
    )


def failure(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert body["kind"] == "failure", body
    failure: dict[str, Any] = body["failure"]
    assert failure["status"] == response.status_code
    return failure


async def test_auth_errors_are_in_the_routes_format(bracket_hub: Hub) -> None:
    body = {"model": "mock/gpt-4o-mini", "say": "hi"}
    async with anonymous(bracket_hub) as client:
        nokey = await client.post("/bracket/chat", json=body)
        openai = await client.post("/v1/chat/completions", json=body)
    wrong_key = await bracket_hub.client.post(
        "/bracket/chat", json=body, headers={"authorization": "Bearer sk-nope"}
    )
    assert nokey.status_code == 401 and failure(nokey)["why"] == "missing_api_key"
    assert wrong_key.status_code == 401 and failure(wrong_key)["why"] == "malformed_api_key"
    # The OpenAI routes keep the OpenAI shape.
    assert openai.json()["error"]["code"] == "missing_api_key"


async def test_parse_credit_and_limit_errors_are_in_the_routes_format(bracket_hub: Hub) -> None:
    client = bracket_hub.client
    bad_json = await client.post(
        "/bracket/chat", content=b"{", headers={"content-type": "application/json"}
    )
    unknown = await client.post("/bracket/chat", json={"model": "nowhere/x", "say": "hi"})
    assert bad_json.status_code == 400 and failure(bad_json)["why"] == "invalid_json"
    assert unknown.status_code == 404 and failure(unknown)["why"] == "unknown_model"

    first = await client.post("/bracket/chat", json={"model": "mock/gpt-4o-mini", "say": "hi"})
    assert first.status_code == 200, first.text
    assert first.json()["choices"][0]["message"]["content"]
    limited = await client.post("/bracket/chat", json={"model": "mock/gpt-4o-mini", "say": "hi"})
    assert limited.status_code == 429 and failure(limited)["why"] == "rate_limited"
    assert 0 < int(limited.headers["retry-after"]) <= 60  # the headers survive the format
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"


async def test_no_credit_is_a_402_in_the_routes_format(bracket_hub: Hub) -> None:
    await bracket_hub.admin.grant(USER, -to_units(10))
    refused = await bracket_hub.client.post(
        "/bracket/chat", json={"model": "mock/gpt-4o-mini", "say": "hi"}
    )
    assert refused.status_code == 402 and failure(refused)["why"] == "insufficient_credits"


async def test_a_pattern_route_takes_the_model_from_the_path(
    bracket_hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    answer = await bracket_hub.client.post(
        "/bracket/models/mock/gpt-4o-mini:say", json={"say": "hi"}
    )
    assert answer.status_code == 200, answer.text
    sent = json.loads(mock_upstream.calls.last.request.content)
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    [recorded] = await bracket_hub.calls()
    assert recorded["model"] == "mock/gpt-4o-mini"

    elsewhere = await bracket_hub.client.post("/bracket/models/nowhere/a/b:say", json={"say": "hi"})
    assert elsewhere.status_code == 404 and failure(elsewhere)["why"] == "unknown_model"


async def test_unknown_routes_are_a_404_before_auth(hub: Hub) -> None:
    async with anonymous(hub) as client:
        for method, path in (("POST", "/v1/nothing"), ("GET", "/v1/nothing"), ("PUT", "/v2/x")):
            answer = await client.request(method, path)
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
        # Known routes still ask for a key, also one a trailing slash would redirect.
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.post("/v1/chat/completions", json={})).status_code == 401
        assert (await client.get("/dashboard/")).status_code == 401


async def test_one_model_by_an_id_with_slashes(
    db_url: str, mock_upstream: respx.MockRouter
) -> None:
    settings = make_settings(db_url, provider="openrouter")
    started = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    try:
        await started.admin.set_rate(
            "openrouter/openai/gpt-4o", "chatCompletion", input_rate=1, output_rate=2
        )
        found = await started.client.get("/v1/models/openrouter/openai/gpt-4o")
        listed = await started.client.get("/api/v2/models/openrouter/gpt-4o-mini")
        missing = await started.client.get("/v1/models/openrouter/openai/nope")
    finally:
        await started.client.aclose()
        await started.app.shutdown()
    assert found.status_code == 200, found.text
    assert found.json() == {
        "id": "openrouter/openai/gpt-4o",
        "object": "model",
        "created": 0,
        "owned_by": "openrouter",
        "type": "chat",
        "context_length": 128_000,
        "pricing": {"prompt": "0.0000000001", "completion": "0.0000000002", "image": "0"},
    }
    assert listed.status_code == 200 and listed.json()["id"] == "openrouter/gpt-4o-mini"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_model"
