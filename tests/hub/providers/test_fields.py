"""Nothing dropped in silence: each OpenAI chat field reaches Anthropic and Gemini, or is
refused (400 `unsupported_parameter` naming it, nothing upstream, nothing charged), or, with
`drop_unsupported = true`, dropped and logged by name."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import select

from hub.settings import ConfigError, load_settings
from hub.store.schema import accounts
from tests.conftest import USER, Hub, make_settings, start_hub
from tests.hub.providers.test_anthropic import WEATHER_TOOL, chunks, events, message

pytestmark = pytest.mark.anyio

CLAUDE = "claude/claude-sonnet-4"
GEMINI = "gem/gemini-2.5-flash"
MESSAGES_URL = "http://anthropic.test/v1/messages"
GEMINI_URL = "http://gemini.test/v1beta/models/gemini-2.5-flash:generateContent"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}
TEXT_4C = {"type": "text_delta", "text": "4C"}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def _hub(db_url: str, upstream: respx.MockRouter, drop: bool = False) -> Hub:
    settings = make_settings(
        db_url, provider="claude", kind="anthropic", base_url="http://anthropic.test"
    )
    gem = replace(settings.providers["claude"], name="gem", kind="gemini")
    gem = replace(gem, base_url="http://gemini.test", drop_unsupported=drop)
    claude = replace(settings.providers["claude"], drop_unsupported=drop)
    settings = replace(settings, providers={"claude": claude, "gem": gem})
    started = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
    for model in (CLAUDE, GEMINI):
        await started.admin.set_rate(model, "chatCompletion", input_rate=1_000, output_rate=5_000)
    return started


@pytest.fixture
async def hub(db_url: str, upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    started = await _hub(db_url, upstream)
    yield started
    await started.client.aclose()
    await started.app.shutdown()


def claude_answer(upstream: respx.MockRouter, *content: dict[str, Any], stop: str = "end_turn"):  # type: ignore[no-untyped-def]
    return upstream.post(MESSAGES_URL).respond(json=message(list(content), stop=stop))


def gemini_answer(upstream: respx.MockRouter, *candidates: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    body = {
        "candidates": [
            {"index": i, "content": {"role": "model", "parts": parts}, "finishReason": "STOP"}
            for i, parts in enumerate(candidates or ([{"text": "ok"}],))
        ],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 3},
    }
    return upstream.post(GEMINI_URL).respond(json=body)


def sent(route: respx.Route) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


# Anthropic: carried --------------------------------------------------------------------


async def test_a_json_schema_goes_to_anthropic_as_a_forced_tool_and_returns_as_text(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    answer = {"city": "Oslo", "temp": 4}
    tool_use = {"type": "tool_use", "id": "t1", "name": "json_answer", "input": answer}
    route = claude_answer(upstream, tool_use, stop="tool_use")

    response = await hub.chat(model=CLAUDE, response_format=JSON_SCHEMA)

    assert response.status_code == 200, response.text
    body = sent(route)
    [tool] = body["tools"]
    assert (tool["name"], tool["input_schema"]) == ("json_answer", SCHEMA)
    assert body["tool_choice"] == {"type": "tool", "name": "json_answer"}
    choice = response.json()["choices"][0]
    assert json.loads(choice["message"]["content"]) == answer
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"


async def test_json_object_asks_anthropic_for_any_object(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    route = claude_answer(
        upstream, {"type": "tool_use", "id": "t", "name": "json_answer", "input": {"a": 1}}
    )
    response = await hub.chat(model=CLAUDE, response_format={"type": "json_object"})
    assert sent(route)["tools"][0]["input_schema"] == {"type": "object"}
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"a": 1}


async def test_a_streamed_json_answer_arrives_as_content_deltas(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    started = {"id": "msg_s", "usage": {"input_tokens": 10, "output_tokens": 1}}
    block = {"type": "tool_use", "id": "t1", "name": "json_answer", "input": {}}
    stream = events(
        ("message_start", {"type": "message_start", "message": started}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        *[
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
            )
            for piece in ('{"city": "Os', 'lo", "temp": 4}')
        ],
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 7},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    upstream.post(MESSAGES_URL).respond(
        content=stream, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(model=CLAUDE, stream=True, response_format=JSON_SCHEMA)

    deltas = [c["choices"][0] for c in chunks(response.text) if c["choices"]]
    text = "".join(d["delta"].get("content") or "" for d in deltas)
    assert json.loads(text) == {"city": "Oslo", "temp": 4}
    assert not any("tool_calls" in d["delta"] for d in deltas)
    assert deltas[-1]["finish_reason"] == "stop"


async def test_reasoning_effort_becomes_a_thinking_budget_and_thinking_returns(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    route = claude_answer(
        upstream,
        {"type": "thinking", "thinking": "Oslo is cold.", "signature": "sig"},
        {"type": "text", "text": "4C"},
    )

    response = await hub.chat(model=CLAUDE, reasoning_effort="medium", max_tokens=500)

    body = sent(route)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 500 + 8192  # the answer keeps the room the caller gave it
    message_ = response.json()["choices"][0]["message"]
    assert (message_["content"], message_["reasoning_content"]) == ("4C", "Oslo is cold.")


async def test_streamed_thinking_arrives_as_reasoning_content_deltas(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    started = {"id": "msg_t", "usage": {"input_tokens": 10, "output_tokens": 1}}
    thinking = {"type": "thinking_delta", "thinking": "Oslo is cold."}
    stream = events(
        ("message_start", {"type": "message_start", "message": started}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": thinking}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": TEXT_4C}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
    )
    claude = upstream.post(MESSAGES_URL).respond(
        content=stream, headers={"content-type": "text/event-stream"}
    )
    gemini_stream = (
        b"data: "
        + json.dumps(
            {
                "candidates": [
                    {
                        "content": {
                            "parts": [{"text": "Cold there.", "thought": True}, {"text": "4C"}]
                        }
                    }
                ]
            }
        ).encode()
        + b"\n\n"
    )
    upstream.post(GEMINI_URL.replace("generateContent", "streamGenerateContent")).respond(
        content=gemini_stream, headers={"content-type": "text/event-stream"}
    )

    for model, thought in ((CLAUDE, "Oslo is cold."), (GEMINI, "Cold there.")):
        response = await hub.chat(model=model, stream=True, reasoning_effort="low")
        deltas = [c["choices"][0]["delta"] for c in chunks(response.text) if c["choices"]]
        assert "".join(d.get("reasoning_content") or "" for d in deltas) == thought
        assert "".join(d.get("content") or "" for d in deltas) == "4C"
    assert sent(claude)["thinking"]["budget_tokens"] == 4096


async def test_parallel_tool_calls_user_and_top_k_reach_anthropic_and_defaults_pass(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    route = claude_answer(upstream, {"type": "text", "text": "ok"})
    # Values that ask for nothing beyond the default pass even for fields Anthropic lacks.
    idle = {
        "n": 1,
        "logprobs": False,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logit_bias": {},
        "response_format": {"type": "text"},
        "seed": None,
    }
    response = await hub.chat(
        model=CLAUDE,
        tools=[WEATHER_TOOL],
        parallel_tool_calls=False,
        user="user-42",
        top_k=5,
        **idle,
    )
    assert response.status_code == 200, response.text
    body = sent(route)
    assert not set(idle) & set(body)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert body["metadata"] == {"user_id": "user-42"}
    assert body["top_k"] == 5


# Refused: 400 naming the field, nothing sent, nothing charged ---------------------------

AUDIO = {"data": "UklGRg==", "format": "wav"}
PDF = {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}


def said(part: dict[str, Any]) -> dict[str, Any]:
    """A user message of some text and this content part."""
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "See:"}, part]}]}


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (CLAUDE, {"seed": 7}, "seed"),
    (CLAUDE, {"n": 2}, "n"),
    (CLAUDE, {"presence_penalty": 0.5}, "presence_penalty"),
    (CLAUDE, {"frequency_penalty": 0.5}, "frequency_penalty"),
    (CLAUDE, {"logit_bias": {"50256": -100}}, "logit_bias"),
    (CLAUDE, {"logprobs": True, "top_logprobs": 2}, "logprobs"),
    (CLAUDE, {"reasoning_effort": "medium", "response_format": JSON_SCHEMA}, "reasoning_effort"),
    (CLAUDE, {"reasoning_effort": "extreme"}, "reasoning_effort"),
    (CLAUDE, {"response_format": {"type": "json_schema"}}, "response_format"),
    (CLAUDE, {"prompt_cache_key": "k"}, "prompt_cache_key"),
    (CLAUDE, {"max_tokens": 0}, "max_tokens"),
    (GEMINI, {"max_completion_tokens": "lots"}, "max_completion_tokens"),
    (CLAUDE, {"a_field_nobody_knows": 1}, "a_field_nobody_knows"),
    (GEMINI, {"user": "user-42"}, "user"),
    (GEMINI, {"parallel_tool_calls": False}, "parallel_tool_calls"),
    (GEMINI, {"logprobs": True}, "logprobs"),
    (GEMINI, {"logit_bias": {"1": 2}}, "logit_bias"),
    (GEMINI, {"n": 0}, "n"),
    (GEMINI, {"a_field_nobody_knows": 1}, "a_field_nobody_knows"),
    (CLAUDE, said({"type": "input_audio", "input_audio": AUDIO}), "messages[0].content[1].type"),
    (CLAUDE, said({"type": "file", "file": {"file_id": "file-1"}}), "messages[0].content[1].file"),
    (GEMINI, said({"type": "file", "file": {"file_id": "file-1"}}), "messages[0].content[1].file"),
    (GEMINI, {"messages": [{"role": "function", "name": "f", "content": "1"}]}, "messages[0].role"),
]


async def test_each_field_a_provider_cannot_take_is_refused_naming_it_and_costs_nothing(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    before = await hub.admin.ledger(USER)
    for model, extra, param in REFUSED:
        response = await hub.chat(model=model, **extra)
        assert response.status_code == 400, (param, response.text)
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("unsupported_parameter", param)
        assert param in error["message"]
    assert not upstream.calls  # nothing reached a provider
    calls = await hub.calls()
    assert len(calls) == len(REFUSED)
    assert all(c["status"] == "failed" and c["credits"] == 0 for c in calls)
    assert {c["error_code"] for c in calls} == {"unsupported_parameter"}
    assert await hub.admin.ledger(USER) == before
    rows = await hub.store.read(select(accounts.c.held))
    assert sum(int(row["held"]) for row in rows) == 0  # every hold released


# Gemini: carried -----------------------------------------------------------------------


async def test_a_json_schema_reaches_gemini_whole(hub: Hub, upstream: respx.MockRouter) -> None:
    route = gemini_answer(upstream, [{"text": '{"city": "Oslo", "temp": 4}'}])
    response = await hub.chat(model=GEMINI, response_format=JSON_SCHEMA)
    config = sent(route)["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == SCHEMA
    assert json.loads(response.json()["choices"][0]["message"]["content"])["city"] == "Oslo"


async def test_reasoning_effort_becomes_gemini_thinking_and_thoughts_return(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    route = gemini_answer(upstream, [{"text": "Cold there.", "thought": True}, {"text": "4C"}])
    response = await hub.chat(model=GEMINI, reasoning_effort="high")
    thinking = sent(route)["generationConfig"]["thinkingConfig"]
    assert thinking == {"thinkingBudget": 16384, "includeThoughts": True}
    message_ = response.json()["choices"][0]["message"]
    assert (message_["content"], message_["reasoning_content"]) == ("4C", "Cold there.")


async def test_sampling_fields_and_n_reach_gemini(hub: Hub, upstream: respx.MockRouter) -> None:
    route = gemini_answer(upstream, [{"text": "one"}], [{"text": "two"}])
    response = await hub.chat(
        model=GEMINI,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        top_k=3,
        stop=["END"],
        n=2,
    )
    config = sent(route)["generationConfig"]
    assert config == {
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.25,
        "topK": 3,
        "stopSequences": ["END"],
        "candidateCount": 2,
    }
    choices = response.json()["choices"]
    assert [(c["index"], c["message"]["content"]) for c in choices] == [(0, "one"), (1, "two")]


async def test_inline_pdfs_and_audio_reach_the_providers_that_take_them(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    claude = claude_answer(upstream, {"type": "text", "text": "ok"})
    gemini = gemini_answer(upstream)
    first = await hub.chat(model=CLAUDE, **said({"type": "file", "file": PDF}))
    second = await hub.chat(model=GEMINI, **said({"type": "input_audio", "input_audio": AUDIO}))
    assert (first.status_code, second.status_code) == (200, 200)
    document = sent(claude)["messages"][0]["content"][1]
    source = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}
    assert document == {"type": "document", "source": source}
    audio = sent(gemini)["contents"][0]["parts"][1]
    assert audio == {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}


async def test_a_gemini_stream_with_n_2_gives_two_choices(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    def candidate(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        found = {"index": index, "content": {"role": "model", "parts": [{"text": text}]}}
        return {**found, "finishReason": finish} if finish else found

    frames = [
        [candidate(0, "Hel"), candidate(1, "Bon")],
        [candidate(0, "lo", "STOP"), candidate(1, "jour", "STOP")],
    ]
    stream = b"".join(b"data: " + json.dumps({"candidates": f}).encode() + b"\n\n" for f in frames)
    route = upstream.post(GEMINI_URL.replace("generateContent", "streamGenerateContent")).respond(
        content=stream, headers={"content-type": "text/event-stream"}
    )

    response = await hub.chat(model=GEMINI, stream=True, n=2)

    assert sent(route)["generationConfig"]["candidateCount"] == 2
    texts = {0: "", 1: ""}
    finishes = {}
    for item in chunks(response.text):
        for choice in item["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                finishes[choice["index"]] = choice["finish_reason"]
    assert texts == {0: "Hello", 1: "Bonjour"}
    assert finishes == {0: "stop", 1: "stop"}


# The operator's escape hatch -----------------------------------------------------------


async def test_drop_unsupported_drops_and_logs_field_names_only(
    db_url: str, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await _hub(db_url, upstream, drop=True)
    try:
        claude = claude_answer(upstream, {"type": "text", "text": "ok"})
        gemini = gemini_answer(upstream)
        with caplog.at_level(logging.INFO, logger="aigne_hub.fields"):
            first = await hub.chat(model=CLAUDE, seed=1234567, odd_field="s3cret-value")
            second = await hub.chat(model=GEMINI, user="s3cret-user", temperature=0.5)
        assert (first.status_code, second.status_code) == (200, 200)
        assert not {"seed", "odd_field"} & set(sent(claude))
        assert "user" not in sent(gemini)
        assert sent(gemini)["generationConfig"] == {"temperature": 0.5}
        lines = [r.getMessage() for r in caplog.records if r.name == "aigne_hub.fields"]
        assert len(lines) == 2
        assert "seed, odd_field" in lines[0] and "claude" in lines[0]
        assert "user" in lines[1] and "gem" in lines[1]
        logged = "\n".join(lines)
        assert "1234567" not in logged and "s3cret" not in logged
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


def test_drop_unsupported_is_read_per_provider_and_must_be_true_or_false(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    table = '[providers.claude]\nkind = "anthropic"\nbase_url = "http://a.test"\n'
    config.write_text(table + "drop_unsupported = true\n")
    assert load_settings(config, env={}).providers["claude"].drop_unsupported is True
    config.write_text(table)
    assert load_settings(config, env={}).providers["claude"].drop_unsupported is False
    config.write_text(table + 'drop_unsupported = "yes"\n')
    with pytest.raises(ConfigError, match="providers.claude.drop_unsupported"):
        load_settings(config, env={})
