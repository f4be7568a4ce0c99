"""The Responses API client format on its own: requests read into the normalized chat body,
chat answers and chunks rendered as Responses objects and events, and the pass-through tap.
(The SDK and Codex tests, against a running hub, are in test_responses_inbound_live.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.dialects.responses import RESPONSES, PassThrough
from hub.dialects.responses_stream import ResponsesStream
from hub.providers.openai import OpenAIProvider
from hub.settings import ConfigError, ProviderSettings, load_settings
from hub.sse import EventSplitter, json_data
from middleware.call import Call, Identity, Usage
from middleware.errors import HubError


def _call(body: dict[str, Any] | None = None, raw: dict[str, Any] | None = None) -> Call:
    identity = Identity(account_id=1, user_did="did:test", key_id="key")
    return Call(
        identity=identity,
        call_type="chatCompletion",
        model="fake/gpt-4o-mini",
        body=body or {"model": "fake/gpt-4o-mini", "messages": []},
        raw_body=json.dumps(raw or {}).encode(),
        stream=True,
        dialect="responses",
    )


def _refused(body: dict[str, Any]) -> HubError:
    with pytest.raises(HubError) as caught:
        RESPONSES.normalize({"model": "m", "input": "hi", **body}, "chatCompletion")
    assert caught.value.status == 400 and caught.value.code == "unsupported_parameter"
    return caught.value


def test_a_conversation_with_a_tool_call_and_its_output_reads_as_chat() -> None:
    body = {
        "model": "fake/gpt-4o-mini",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "Use tools."}]},
            {"type": "message", "role": "user", "content": "Weather in Paris?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "It is sunny."}],
            },
        ],
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            }
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "user": "u1",
        "metadata": {"k": "v"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "store": False,
        "stream": True,
    }
    request = RESPONSES.normalize(body, "chatCompletion")
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    assert request["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        }
    ]
    assert request["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}},
    }
    assert request["max_tokens"] == 50 and request["reasoning_effort"] == "low"
    assert (request["temperature"], request["top_p"], request["parallel_tool_calls"]) == (
        0.2,
        0.9,
        False,
    )
    assert request["user"] == "u1" and request["metadata"] == {"k": "v"}
    assert request["stream"] is True and "store" not in request


def test_a_string_input_and_an_image_read_as_user_messages() -> None:
    assert RESPONSES.normalize({"model": "m", "input": "hi"}, "chatCompletion")["messages"] == [
        {"role": "user", "content": "hi"}
    ]
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
    request = RESPONSES.normalize(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "What?"}, image]}
            ],
        },
        "chatCompletion",
    )
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "What?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
    ]


def test_namespace_tools_are_flattened_and_their_calls_named_back() -> None:
    tools = [
        {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "spawn"}]}
    ]
    request = RESPONSES.normalize({"model": "m", "input": "x", "tools": tools}, "chatCompletion")
    assert request["tools"][0]["function"]["name"] == "agents__spawn"
    call = _call(request, {"tools": tools})
    stream = ResponsesStream(call)
    chunk = {
        "choices": [
            {
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "function": {"name": "agents__spawn", "arguments": "{}"},
                        }
                    ]
                }
            }
        ]
    }
    events = _events(stream.chunks([chunk]) + stream.close(0))
    done = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert (done["namespace"], done["name"], done["call_id"]) == ("agents", "spawn", "c1")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]}, "tools[1]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "u"}],
                    }
                ]
            },
            "input[0].output[0].type",
        ),
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"some_new_field": 1}, "some_new_field"),
    ],
)
def test_what_cannot_be_carried_is_refused_by_name(body: dict[str, Any], param: str) -> None:
    error = _refused(body)
    assert error.param == param and param.split("[")[0] in error.message


def test_fields_set_to_null_count_as_absent_and_hints_are_not_translated() -> None:
    body = {"model": "m", "input": "x", "previous_response_id": None, "store": True}
    # Codex sends a cache key on every call; Anthropic and Gemini would refuse one.
    body |= {"prompt_cache_key": "session-1", "prompt_cache_retention": "24h"}
    body |= {"include": ["reasoning.encrypted_content"], "client_metadata": {"turn": "1"}}
    request = RESPONSES.normalize(body, "chatCompletion")
    assert request == {"model": "m", "messages": [{"role": "user", "content": "x"}]}


def test_a_whole_completion_renders_as_a_response_object() -> None:
    call = _call()
    call.usage = Usage(input_tokens=7, output_tokens=3, cached_tokens=2)
    completion = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            }
        ]
    }
    response = json.loads(RESPONSES.answer(call, json.dumps(completion).encode(), 0))
    assert response["id"].startswith("resp_") and response["object"] == "response"
    assert response["status"] == "completed" and response["model"] == "fake/gpt-4o-mini"
    message, function = response["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "Let me look."
    assert (function["type"], function["call_id"], function["name"], function["arguments"]) == (
        "function_call",
        "c1",
        "f",
        "{}",
    )
    assert response["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10,
    }


def _events(data: bytes) -> list[dict[str, Any]]:
    splitter = EventSplitter()
    events = []
    for event in splitter.feed(data):
        payload = json_data(event)
        assert isinstance(payload, dict)
        assert event.startswith(f"event: {payload['type']}\n".encode()), event
        events.append(payload)
    assert splitter.flush() == b""
    return events


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_stream_of_text_then_a_tool_call_renders_every_event_in_order() -> None:
    call = _call()
    stream = ResponsesStream(call)
    out = stream.chunks(
        [_chunk({"role": "assistant", "content": "Hi"}), _chunk({"content": " there"})]
    )
    tool = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    out += stream.chunks([_chunk({"tool_calls": [tool]})])
    out += stream.chunks(
        [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})]
    )
    out += stream.chunks(
        [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "tool_calls")]
    )
    call.usage = Usage(input_tokens=4, output_tokens=6)
    events = _events(out + stream.close(0))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[6]["text"] == "Hi there" and events[12]["arguments"] == '{"a":1}'
    assert events[9]["output_index"] == 1 and events[9]["item"]["call_id"] == "c1"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["id"] == events[0]["response"]["id"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["usage"]["input_tokens"] == 4 and final["usage"]["total_tokens"] == 10


def test_a_stream_that_fails_midway_ends_with_error_and_response_failed() -> None:
    stream = ResponsesStream(_call())
    out = stream.chunks([_chunk({"content": "Hi"})]) + stream.error("upstream_error", "boom")
    events = _events(out)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "boom" and events[-2]["code"] == "upstream_error"
    assert events[-1]["response"]["error"] == {"code": "upstream_error", "message": "boom"}
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_stream_cut_by_its_token_limit_is_incomplete() -> None:
    stream = ResponsesStream(_call())
    events = _events(stream.chunks([_chunk({"content": "Hi"}, "length")]) + stream.close(0))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def _sse(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def test_pass_through_relays_bytes_untouched_and_taps_usage() -> None:
    call = _call()
    relay = RESPONSES.native_stream(call, lambda text: text)
    usage = {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 1}}
    events = [
        _sse("response.created", sequence_number=0, response={"id": "resp_up", "error": None}),
        _sse("response.output_text.delta", sequence_number=1, delta="Hi"),
        _sse("response.completed", sequence_number=2, response={"id": "resp_up", "usage": usage}),
    ]
    assert relay.relay(events) == b"".join(events)
    assert relay.complete and call.delivered_chunks == 1
    assert call.usage == Usage(input_tokens=9, output_tokens=4, cached_tokens=1)
    assert relay.close(None, 0) == b""


def test_pass_through_scrubs_keys_from_errors_and_ends_a_broken_stream_in_shape() -> None:
    call = _call()
    relay: PassThrough = RESPONSES.native_stream(
        call, lambda text: text.replace("sk-secret", "***")
    )
    out = relay.relay(
        [
            _sse("response.created", sequence_number=0, response={"id": "resp_up"}),
            _sse("error", sequence_number=1, code="x", message="bad key sk-secret"),
        ]
    )
    assert b"sk-secret" not in out and b"bad key ***" in out
    assert call.error_code == "upstream_error"
    tail = _events(relay.close(("upstream_disconnected", "cut"), 0))
    assert [e["type"] for e in tail] == ["error", "response.failed"]
    assert [e["sequence_number"] for e in tail] == [2, 3]
    assert tail[1]["response"]["id"] == "resp_up"


def test_a_native_answer_reports_its_usage() -> None:
    body = json.dumps({"object": "response", "usage": {"input_tokens": 3, "output_tokens": 2}})
    sent, usage = RESPONSES.native_answer(_call(), body.encode())
    assert sent == body.encode() and usage == Usage(input_tokens=3, output_tokens=2)


def _provider(base_url: str, responses_api: bool | None = None) -> OpenAIProvider:
    settings = ProviderSettings("p", "openai", base_url, ("sk-up",), responses_api=responses_api)
    return OpenAIProvider(settings, {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0})


def _upstream(provider: OpenAIProvider, raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    call = _call(RESPONSES.normalize(raw, "chatCompletion"), raw)
    call.upstream_model = "gpt-4o-mini"
    credential = provider.pool.pick([])
    assert credential is not None
    request = provider.build_request(call, credential)
    return str(request.url), json.loads(b"".join(request.stream))  # type: ignore[arg-type]


def test_openai_gets_the_clients_own_responses_body_with_the_model_renamed() -> None:
    raw = {"model": "fake/gpt-4o-mini", "input": "hi", "store": False, "include": ["x"]}
    url, sent = _upstream(_provider("https://api.openai.com/v1"), raw)
    assert url == "https://api.openai.com/v1/responses"
    assert sent == {**raw, "model": "gpt-4o-mini"}
    # A fake (or any base URL) is told by configuration that it serves the API.
    url, _ = _upstream(_provider("http://127.0.0.1:9/v1", responses_api=True), raw)
    assert url == "http://127.0.0.1:9/v1/responses"


def test_chat_only_openai_compatible_providers_get_a_chat_completions_request() -> None:
    raw = {"model": "fake/gpt-4o-mini", "instructions": "Be brief.", "input": "hi"}
    url, sent = _upstream(_provider("https://api.deepseek.com/v1"), raw)
    assert url == "https://api.deepseek.com/v1/chat/completions"
    assert sent["model"] == "gpt-4o-mini" and "input" not in sent
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_a_provider_says_in_its_settings_whether_it_serves_the_api(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        '[providers.fake]\nbase_url = "http://127.0.0.1:9/v1"\nresponses_api = true\n'
        '[providers.deepseek]\napi_key = "sk-d"\n[providers.openai]\napi_key = "sk-o"\n'
    )
    providers = load_settings(config, env={}).providers
    assert providers["fake"].serves_responses() and providers["openai"].serves_responses()
    assert not providers["deepseek"].serves_responses()
    config.write_text('[providers.fake]\nbase_url = "http://x/v1"\nresponses_api = "yes"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert caught.value.key == "providers.fake.responses_api"
