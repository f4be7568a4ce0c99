"""The official `google-genai` SDK against a live hub in front of the example fake
provider: generateContent whole and streamed, with a function tool, both to a Gemini
provider (the client's bytes pass through) and to an OpenAI-compatible one (translated
both ways); each call's credits checked against the rate and the fake's counts (words);
countTokens; the hub's refusals raised as the SDK's own error classes with their code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types

from examples.fake_protocols import REPLY
from hub.settings import ProviderSettings, Settings
from middleware.limits import LimitPolicy
from middleware.money import to_units
from middleware.ports import Quota
from tests.conftest import USER, Live, live_hub, make_settings

pytestmark = pytest.mark.anyio

NATIVE = "fake-gemini/gemini-2.5-flash"  # a Gemini provider: pass-through
TRANSLATED = "fake/gpt-4o-mini"  # an OpenAI-compatible provider: translated
CLAUDE = "fake-claude/claude-sonnet-4"  # an Anthropic provider: translated twice over
INPUT_RATE, OUTPUT_RATE = 10_000, 20_000
PROMPT = "What is the weather in Paris?"
WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="The weather in a city",
            parameters=types.Schema(
                type=types.Type.OBJECT,
                properties={"city": types.Schema(type=types.Type.STRING)},
                required=["city"],
            ),
        )
    ]
)


def gemini_hub(tmp_path: Path, **changes: Any) -> AbstractAsyncContextManager[Live]:
    """The fake provider behind two providers (`fake-gemini`, Gemini; `fake`, OpenAI),
    the hub in front, both models priced. SQLite: what is tested here is the wire format."""

    def settings(upstream_url: str) -> Settings:
        gemini = ProviderSettings(
            "fake-gemini", "gemini", upstream_url, ("gemini-key",), ("gemini-2.5-flash",)
        )
        claude = ProviderSettings(
            "fake-claude", "anthropic", upstream_url, ("claude-key",), ("claude-sonnet-4",)
        )
        return make_settings(
            f"sqlite:///{tmp_path / 'hub.db'}",
            provider="fake",
            base_url=upstream_url + "/v1",
            more_providers=(gemini, claude),
            **changes,
        )

    return live_hub(
        f"sqlite:///{tmp_path / 'hub.db'}",
        (NATIVE, TRANSLATED, CLAUDE),
        rates=(INPUT_RATE, OUTPUT_RATE),
        settings_for=settings,
    )


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with gemini_hub(tmp_path) as started:
        yield started


@asynccontextmanager
async def client(
    live: Live, key: str | None = None, paths: list[bytes] | None = None
) -> AsyncIterator[Any]:
    """The SDK's async models API for the hub. On its httpx transport: with aiohttp
    installed the SDK would pick that, whose session subclass trips a DeprecationWarning
    in aiohttp (an error in this test suite). `paths` collects the paths it sends, as sent."""

    async def note(request: httpx.Request) -> None:
        if paths is not None:
            paths.append(request.url.raw_path)

    async with httpx.AsyncClient(timeout=30, event_hooks={"request": [note]}) as http:
        sdk = genai.Client(
            api_key=key or live.key,
            http_options=types.HttpOptions(
                base_url=live.hub_url, api_version="v1beta", httpx_async_client=http
            ),
        )
        yield sdk.aio.models


def credits(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * INPUT_RATE + output_tokens * OUTPUT_RATE


def words(*texts: str) -> int:
    return sum(len(text.split()) for text in texts)


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED])
async def test_a_whole_answer_and_its_exact_credits(live: Live, model: str) -> None:
    paths: list[bytes] = []
    async with client(live, paths=paths) as sdk:
        answer = await sdk.generate_content(
            model=model,
            contents="Say hi",
            config=types.GenerateContentConfig(
                system_instruction="Be brief.", max_output_tokens=200, temperature=0.5
            ),
        )
        assert answer.text == REPLY
        # The SDK leaves the model's slash as it is in the path (the hub would take %2F too).
        assert paths == [f"/v1beta/models/{model}:generateContent".encode()]
        assert answer.candidates and answer.candidates[0].finish_reason == types.FinishReason.STOP
        # The fake counts words: "Be brief." and "Say hi" on either protocol.
        usage = answer.usage_metadata
        assert usage is not None
        assert (usage.prompt_token_count, usage.candidates_token_count) == (4, words(REPLY))
        assert usage.total_token_count == 4 + words(REPLY)
        recorded = await live.wait_for_call(model=model, status="success")
        assert (recorded["input_tokens"], recorded["output_tokens"]) == (4, words(REPLY))
        assert recorded["credits"] == credits(4, words(REPLY))
        assert recorded["client_format"] == "gemini"
        sent = live.fake.requests[-1]
        if model == NATIVE:
            # The client's own body to the upstream model's URL, with the hub's key.
            assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
            assert sent["body"]["systemInstruction"]["parts"][0]["text"] == "Be brief."
            assert sent["body"]["generationConfig"] == {"maxOutputTokens": 200, "temperature": 0.5}
            assert sent["headers"]["x-goog-api-key"] == "gemini-key"
        else:
            assert sent["path"] == "/v1/chat/completions"
            assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
            assert (sent["body"]["max_tokens"], sent["body"]["temperature"]) == (200, 0.5)
            assert sent["body"]["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("model", [NATIVE, TRANSLATED])
async def test_a_streamed_answer_and_its_exact_credits(live: Live, model: str) -> None:
    async with client(live) as sdk:
        pieces = [
            chunk
            async for chunk in await sdk.generate_content_stream(model=model, contents="Say hi")
        ]
        assert len(pieces) > 2  # streamed, not one answer at the end
        assert "".join(p.text or "" for p in pieces) == REPLY
        last = pieces[-1].usage_metadata
        assert last is not None
        assert (last.prompt_token_count, last.candidates_token_count) == (2, words(REPLY))
        recorded = await live.wait_for_call(model=model, status="success")
        assert recorded["credits"] == credits(2, words(REPLY))
        path = live.fake.requests[-1]["path"]
        assert path.endswith(":streamGenerateContent" if model == NATIVE else "/chat/completions")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", [NATIVE, CLAUDE])
async def test_a_function_call_and_its_answer(live: Live, model: str, stream: bool) -> None:
    async with client(live) as sdk:
        config = types.GenerateContentConfig(
            top_k=3,  # carried to Anthropic as top_k; refused to OpenAI-compatible providers
            tools=[WEATHER],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if stream:
            pieces = [
                c
                async for c in await sdk.generate_content_stream(
                    model=model, contents=PROMPT, config=config
                )
            ]
            calls = [f for p in pieces for f in p.function_calls or []]
            usage = pieces[-1].usage_metadata
        else:
            answer = await sdk.generate_content(model=model, contents=PROMPT, config=config)
            calls = answer.function_calls or []
            usage = answer.usage_metadata
        [call] = calls
        assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
        assert usage is not None and usage.candidates_token_count == 5
        first = await live.wait_for_call(model=model, status="success")
        tokens = (first["input_tokens"], first["output_tokens"])
        assert first["credits"] == credits(*tokens) and tokens[1] == 5
        sent = live.fake.requests[-1]["body"]
        if model == NATIVE:
            assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        else:  # Gemini's OpenAPI schema reached Anthropic as JSON Schema
            assert sent["top_k"] == 3
            assert sent["tools"][0]["name"] == "get_weather"
            assert sent["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
        # The function's result goes back as a functionResponse after the model's call
        # (to the OpenAI-compatible provider too: a tool message answering the call).
        history = [
            types.Content(role="user", parts=[types.Part(text=PROMPT)]),
            types.Content(role="model", parts=[types.Part(function_call=call)]),
            types.Content(
                role="user",
                parts=[
                    types.Part.from_function_response(name="get_weather", response={"t": "sun"})
                ],
            ),
        ]
        for target in (model, TRANSLATED):
            again = await sdk.generate_content(model=target, contents=history)
            assert again.text == REPLY
        messages = live.fake.requests[-1]["body"]["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
        assert messages[1]["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        }
        assert messages[2]["tool_call_id"] == messages[1]["tool_calls"][0]["id"]
        assert messages[2]["content"] == '{"t": "sun"}'


async def test_count_tokens_is_estimated_and_not_billed(live: Live) -> None:
    async with client(live) as sdk:
        counted = await sdk.count_tokens(model=TRANSLATED, contents="x" * 400)
        assert counted.total_tokens is not None and 90 <= counted.total_tokens <= 120
        longer = await sdk.count_tokens(model=NATIVE, contents="x" * 4000)
        assert longer.total_tokens is not None and longer.total_tokens > 9 * counted.total_tokens
        assert await live.calls() == []  # neither recorded nor billed
        with pytest.raises(errors.ClientError) as caught:
            await sdk.count_tokens(model="nope/none", contents="hi")
        assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")


async def test_refusals_raise_the_sdks_own_errors(live: Live) -> None:
    with pytest.raises(errors.ClientError) as caught:
        async with client(live, key="ahk_not-a-key") as sdk:
            await sdk.generate_content(model=TRANSLATED, contents="hi")
    assert (caught.value.code, caught.value.status) == (401, "UNAUTHENTICATED")
    # Out of credits: 402, the hub's code in the message.
    await live.admin.grant(USER, -to_units(5))
    with pytest.raises(errors.ClientError) as caught:
        async with client(live) as sdk:
            await sdk.generate_content(model=NATIVE, contents="hi")
    assert caught.value.code == 402 and "insufficient_credits" in str(caught.value.message)


async def test_a_rate_limit_is_a_429_resource_exhausted(tmp_path: Path) -> None:
    policy = LimitPolicy(key=Quota(rpm=1, tpm=50_000))
    async with gemini_hub(tmp_path, rate_limits=policy) as live:
        async with client(live) as sdk:
            await sdk.generate_content(model=TRANSLATED, contents="hi")
            with pytest.raises(errors.ClientError) as caught:
                await sdk.generate_content(model=TRANSLATED, contents="hi")
        assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")


async def test_the_key_as_a_query_parameter_and_a_stream_without_alt_sse(live: Live) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}
    async with httpx.AsyncClient(base_url=live.hub_url) as http:
        path = f"/v1beta/models/{TRANSLATED}:generateContent"
        answer = await http.post(path, params={"key": live.key}, json=body)
        assert answer.status_code == 200
        assert answer.json()["candidates"][0]["content"]["parts"] == [{"text": REPLY}]
        # A client that encodes the model's slash reaches the same model.
        encoded = "/v1beta/models/fake%2Fgpt-4o-mini:generateContent"
        again = await http.post(encoded, params={"key": live.key}, json=body)
        assert again.status_code == 200, again.text
        # Without alt=sse Gemini streams a JSON array, which the hub does not serve: refused.
        path = f"/v1beta/models/{TRANSLATED}:streamGenerateContent"
        refused = await http.post(path, params={"key": live.key}, json=body)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "alt=sse" in error["message"]
