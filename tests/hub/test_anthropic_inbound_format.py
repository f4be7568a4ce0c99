"""The Anthropic Messages client format alone: requests read into the normalized (OpenAI)
body, what only Anthropic can honour named, answers, streams and errors rendered back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.dialects.anthropic_messages import ANTHROPIC_MESSAGES, MessagesTap
from hub.providers.anthropic_native import renamed
from hub.sse import EventSplitter, json_data
from middleware.call import Call, Identity, Usage
from middleware.errors import HubError

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6"
    "kgAAAABJRU5ErkJggg=="
)


def call_of(body: dict[str, Any], model: str = "fake/gpt-4o-mini") -> Call:
    return Call(
        identity=Identity(1, "did:abt:alice"),
        call_type="chatCompletion",
        model=model,
        body=ANTHROPIC_MESSAGES.normalize(body, "chatCompletion"),
        raw_body=json.dumps(body).encode(),
        stream=bool(body.get("stream")),
        dialect="anthropic",
    )


def refused(body: dict[str, Any]) -> tuple[str | None, str]:
    with pytest.raises(HubError) as caught:
        ANTHROPIC_MESSAGES.normalize(body, "chatCompletion")
    assert caught.value.status == 400 and caught.value.code == "unsupported_parameter"
    return caught.value.param, caught.value.message


def base(**extra: Any) -> dict[str, Any]:
    return {
        "model": "fake/gpt-4o-mini",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hi"}],
        **extra,
    }


def test_a_conversation_with_tools_reads_into_openai_messages() -> None:
    body = base(
        system=[
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Use tools."},
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather? See"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBERi0=",
                        },
                        "title": "a.pdf",
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": "no such city",
                        "is_error": True,
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        tools=[
            {
                "name": "weather",
                "description": "Weather now",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        temperature=0.2,
        top_p=0.9,
        top_k=5,
        metadata={"user_id": "u-42"},
        thinking={"type": "enabled", "budget_tokens": 10000},
        stream=True,
    )
    out = ANTHROPIC_MESSAGES.normalize(body, "chatCompletion")
    assert out["messages"] == [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Use tools."},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather? See"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                {
                    "type": "file",
                    "file": {
                        "filename": "a.pdf",
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                    },
                },
                {"type": "text", "text": "notes"},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather now",
            },
        }
    ]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert (out["stop"], out["temperature"], out["top_p"], out["top_k"]) == (["END"], 0.2, 0.9, 5)
    assert (out["max_tokens"], out["stream"], out["user"]) == (100, True, "u-42")
    assert out["reasoning_effort"] == "medium"
    assert "system" not in out and "metadata" not in out and "thinking" not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "weather"},
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_tool_choices(choice: dict[str, Any], expected: Any) -> None:
    out = ANTHROPIC_MESSAGES.normalize(base(tool_choice=choice), "chatCompletion")
    assert out["tool_choice"] == expected and "parallel_tool_calls" not in out


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 8192}, "medium"),
        ({"type": "enabled", "budget_tokens": 32000}, "high"),
        ({"type": "disabled"}, None),
    ],
)
def test_thinking_budgets_become_reasoning_efforts(
    thinking: dict[str, Any], effort: str | None
) -> None:
    out = ANTHROPIC_MESSAGES.normalize(base(thinking=thinking), "chatCompletion")
    assert out.get("reasoning_effort") == effort


def test_output_format_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = ANTHROPIC_MESSAGES.normalize(
        base(output_format={"type": "json_schema", "schema": schema}), "chatCompletion"
    )
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"frequency_penalty": 1}, "frequency_penalty"),
        ({"metadata": {"user_id": "u", "team": "x"}}, "metadata.team"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        (
            {
                "system": [
                    {
                        "type": "text",
                        "text": "x",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    }
                ]
            },
            "system[0].cache_control.ttl",
        ),
    ],
)
def test_what_no_provider_may_receive_is_refused_by_name(extra: dict[str, Any], param: str) -> None:
    # Unknown to the hub, or billed above the model's rate even at Anthropic.
    assert refused(base(**extra))[0] == param


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0]"),
        ({"container": "c-1"}, "container"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "url", "url": "https://x.test/a.pdf"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].source.type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {
                                        "type": "image",
                                        "source": {
                                            "type": "base64",
                                            "media_type": "image/png",
                                            "data": PNG,
                                        },
                                    }
                                ],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0]",
        ),
        ({"top_k": 3}, "top_k"),
    ],
)
def test_what_only_anthropic_honours_passes_to_it_and_is_refused_elsewhere(
    extra: dict[str, Any], param: str
) -> None:
    call = call_of(base(**extra))  # read (lax) for every layer, whatever the provider
    assert ANTHROPIC_MESSAGES.refusal(call, "anthropic") is None
    found = ANTHROPIC_MESSAGES.refusal(call, "openai")
    assert found is not None and found.code == "unsupported_parameter" and found.param == param
    assert param in found.message


def test_a_plain_call_translates_everywhere() -> None:
    call = call_of(base(system="Be brief.", temperature=1))
    assert ANTHROPIC_MESSAGES.refusal(call, "openai") is None
    assert ANTHROPIC_MESSAGES.refusal(call, "gemini") is None
    assert call.body["messages"][0] == {"role": "system", "content": "Be brief."}


def test_a_whole_answer_is_a_message() -> None:
    call = call_of(base())
    call.usage = Usage(input_tokens=30, output_tokens=7, cached_tokens=10, cache_write_tokens=5)
    completion = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Looking.",
                    "reasoning_content": "think",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
            }
        ],
    }
    answer = json.loads(ANTHROPIC_MESSAGES.answer(call, json.dumps(completion).encode(), 0))
    assert answer == {
        "id": f"msg_{call.id}",
        "type": "message",
        "role": "assistant",
        "model": "fake/gpt-4o-mini",
        "content": [
            {"type": "thinking", "thinking": "think", "signature": ""},
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 15,
            "output_tokens": 7,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 10,
        },
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in EventSplitter().feed(data):
        name = event.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
        payload = json_data(event)
        assert payload["type"] == name  # Anthropic repeats the event name in the data
        out.append((name, payload))
    return out


def test_a_stream_renders_anthropic_events_in_order() -> None:
    call = call_of(base(stream=True))
    call.prompt_estimate = 12
    render = ANTHROPIC_MESSAGES.stream(call)
    data = render.chunks([chunk({"role": "assistant", "content": ""})])
    data += render.chunks(
        [chunk({"reasoning_content": "Let me"}), chunk({"reasoning_content": " see"})]
    )
    data += render.chunks([chunk({"content": "Hel"}), chunk({"content": "lo"})])
    data += render.chunks(
        [
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk({}, "tool_calls"),
            {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}},
        ]
    )
    call.usage = Usage(input_tokens=20, output_tokens=9)
    data += render.close(0)
    got = events(data)
    assert [name for name, _ in got] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = got[0][1]["message"]
    assert (start["id"], start["role"], start["content"]) == (f"msg_{call.id}", "assistant", [])
    assert start["usage"]["input_tokens"] == 12  # the estimate held for, until the end
    assert got[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert got[4][1]["delta"] == {"type": "thinking_delta", "thinking": " see"}
    assert got[6][1]["content_block"] == {"type": "text", "text": ""}
    assert [got[i][1]["delta"]["text"] for i in (7, 8)] == ["Hel", "lo"]
    assert got[10][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "weather",
        "input": {},
    }
    assert got[10][1]["index"] == 2
    partial = "".join(got[i][1]["delta"]["partial_json"] for i in (11, 12))
    assert json.loads(partial) == {"city": "Paris"}
    assert got[14][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[14][1]["usage"]["input_tokens"] == 20 and got[14][1]["usage"]["output_tokens"] == 9


def test_a_stream_that_said_nothing_still_starts_and_ends() -> None:
    call = call_of(base(stream=True))
    call.usage = Usage(input_tokens=3, output_tokens=0)
    names = [name for name, _ in events(ANTHROPIC_MESSAGES.stream(call).close(0))]
    assert names == ["message_start", "ping", "message_delta", "message_stop"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (502, "api_error"),
        (504, "timeout_error"),
    ],
)
def test_errors_take_anthropic_shape_and_keep_the_hub_code(status: int, kind: str) -> None:
    body = json.loads(ANTHROPIC_MESSAGES.error_body(status, "some_code", "Nope.", "model"))
    assert body == {
        "type": "error",
        "error": {"type": kind, "message": "Nope.", "code": "some_code", "param": "model"},
    }


def test_a_mid_stream_error_is_an_error_event() -> None:
    call = call_of(base(stream=True))
    got = events(ANTHROPIC_MESSAGES.stream(call).error("upstream_timeout", "Stalled."))
    assert got == [
        (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "Stalled.",
                    "code": "upstream_timeout",
                    "param": None,
                },
            },
        )
    ]


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def test_pass_through_relays_bytes_and_taps_usage() -> None:
    call = call_of(base(stream=True), "fake-claude/claude-sonnet-4")
    tap = ANTHROPIC_MESSAGES.native_stream(call, lambda text: text.replace("sk-secret", "***"))
    assert isinstance(tap, MessagesTap)
    upstream = [
        sse(
            "message_start",
            {
                "message": {
                    "id": "m",
                    "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 1},
                }
            },
        ),
        sse(
            "content_block_start",
            {"index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        ),
        sse(
            "content_block_delta",
            {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        ),
        sse(
            "content_block_delta",
            {"index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
        ),
        sse("content_block_stop", {"index": 0}),
        sse(
            "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 25}}
        ),
        sse("message_stop", {}),
    ]
    out = tap.relay(upstream[:3]) + tap.relay(upstream[3:5])
    assert not tap.complete and call.usage == Usage(14, 1, 4)
    out += tap.relay(upstream[5:])
    assert out == b"".join(upstream)  # byte for byte
    assert tap.complete and call.usage == Usage(14, 25, 4)
    assert call.delivered_chunks == 2
    error = tap.relay(
        [sse("error", {"error": {"type": "overloaded_error", "message": "key sk-secret busy"}})]
    )
    assert events(error)[0][1]["error"] == {"type": "overloaded_error", "message": "key *** busy"}
    assert call.error_code == "upstream_error"


def test_pass_through_takes_the_whole_usage_a_newer_message_delta_restates() -> None:
    call = call_of(base(stream=True), "fake-claude/claude-sonnet-4")
    tap = ANTHROPIC_MESSAGES.native_stream(call, str)
    tap.relay(
        [sse("message_start", {"message": {"usage": {"input_tokens": 10, "output_tokens": 1}}})]
    )
    tap.relay(
        [
            sse(
                "message_delta",
                {
                    "usage": {
                        "input_tokens": 10,
                        "cache_creation_input_tokens": 6,
                        "output_tokens": 3,
                    }
                },
            )
        ]
    )
    assert call.usage == Usage(16, 3, 0, cache_write_tokens=6)


def test_a_whole_pass_through_answer_is_read_for_usage_only() -> None:
    call = call_of(base(), "fake-claude/claude-sonnet-4")
    body = json.dumps(
        {"type": "message", "content": [], "usage": {"input_tokens": 5, "output_tokens": 2}}
    ).encode()
    assert ANTHROPIC_MESSAGES.native_answer(call, body) == (body, Usage(5, 2))


def test_claude_codes_own_request_shape_translates() -> None:
    # As Claude Code 2.1 sends it for a model name it does not know.
    body = base(
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Say hi"}]},
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Reminder.", "cache_control": {"type": "ephemeral"}}
                ],
            },
        ],
        thinking={"type": "adaptive", "display": "omitted"},
        output_config={"effort": "max"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        tools=[
            {"name": "Read", "input_schema": {"type": "object"}},
            {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": True},
        ],
    )
    call = call_of(body)
    assert ANTHROPIC_MESSAGES.refusal(call, "openai") is None
    assert call.body["messages"][1] == {
        "role": "system",
        "content": [{"type": "text", "text": "Reminder."}],
    }
    # The effort asked outright wins over the one read from adaptive thinking.
    assert call.body["reasoning_effort"] == "high"
    # A deferred tool is not shown to the model until a tool search loads it.
    assert [t["function"]["name"] for t in call.body["tools"]] == ["Read"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
            "context_management.edits[0]",
        ),
        ({"output_config": {"task_budget": 5}}, "output_config.task_budget"),
        (
            {"tools": [{"name": "x", "input_schema": {}, "input_examples": [{}]}]},
            "tools[0].input_examples",
        ),
    ],
)
def test_claude_code_features_only_anthropic_honours(extra: dict[str, Any], param: str) -> None:
    call = call_of(base(**extra))
    assert ANTHROPIC_MESSAGES.refusal(call, "anthropic") is None
    found = ANTHROPIC_MESSAGES.refusal(call, "gemini")
    assert found is not None and found.param == param


def test_output_config_format_is_a_json_schema_response_format() -> None:
    schema = {"type": "object"}
    out = ANTHROPIC_MESSAGES.normalize(
        base(output_config={"format": {"type": "json_schema", "schema": schema}}), "chatCompletion"
    )
    assert out["response_format"]["json_schema"]["schema"] == schema


def test_a_one_million_token_context_beta_is_refused_even_at_anthropic() -> None:
    call = call_of(base(), "fake-claude/claude-sonnet-4")
    call.passed_headers = {
        "anthropic-beta": "interleaved-thinking-2025-05-14,context-1m-2025-08-07"
    }
    found = ANTHROPIC_MESSAGES.refusal(call, "anthropic")
    assert found is not None and found.param == "anthropic-beta"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"max_tokens": 5, "model" : "fake-claude/claude-sonnet-4", "messages": []}',
        # A tool schema with a "model" property: the bytes are parsed and written again.
        b'{"model":"fake-claude/claude-sonnet-4","tools":[{"input_schema":{"model":{}}}]}',
        b'{"mod\\u0065l":"fake-claude/claude-sonnet-4"}',
    ],
)
def test_the_pass_through_renames_only_the_model(raw: bytes) -> None:
    call = call_of(base(), "fake-claude/claude-sonnet-4")
    call.raw_body, call.upstream_model = raw, "claude-sonnet-4"
    sent = json.loads(renamed(call))
    assert sent == {**json.loads(raw), "model": "claude-sonnet-4"}
