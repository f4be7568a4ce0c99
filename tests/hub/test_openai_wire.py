"""Reading the OpenAI wire format: usage from whole bodies and error messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.providers.openai import error_message, usage_in_body
from middleware.call import Usage


def test_usage_is_read_from_the_end_of_a_long_completion() -> None:
    body = json.dumps(
        {
            "choices": [{"message": {"content": "word " * 10_000}}],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": 10_000,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
        }
    ).encode()
    assert usage_in_body(body, "chatCompletion") == Usage(12, 10_000, 4)


def test_usage_quoted_inside_the_answer_is_not_mistaken_for_the_real_one() -> None:
    fake = '"usage": {"prompt_tokens": 999999, "completion_tokens": 999999}'
    body = json.dumps(
        {
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
            "choices": [{"message": {"content": fake}}],
        }
    ).encode()
    assert usage_in_body(body, "chatCompletion") == Usage(3, 2)


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError):
        usage_in_body(b"<html>bad gateway</html>", "chatCompletion")


def test_image_usage_counts_images() -> None:
    body = json.dumps({"data": [{"url": "a"}, {"url": "b"}, {"url": "c"}]}).encode()
    assert usage_in_body(body, "imageGeneration") == Usage(images=3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"message": "bad model"}}', "bad model"),
        (b'{"error": "plain"}', "plain"),
        (b"upstream exploded", "upstream exploded"),
        (b"", "no message"),
    ],
)
def test_error_messages_are_found_in_any_shape(body: bytes, message: str) -> None:
    assert error_message(body) == message


def _call(raw: bytes, stream: bool = False) -> Any:
    from middleware.call import Call, Identity

    body = json.loads(raw)
    call = Call(
        identity=Identity(1, "did:x"),
        call_type="chatCompletion",
        model=body["model"],
        body=body,
        raw_body=raw,
        stream=stream,
    )
    call.upstream_model = body["model"].split("/", 1)[1]
    return call


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"mock/gpt-4o","messages":[{"role":"user","content":"the \\"model\\" is"}]}',
        b'{\n  "model" :  "mock/gpt-4o",\n  "messages": []\n}',
        b'{"messages": [], "temperature": 0.2, "model": "mock/gpt-4o"}',
    ],
)
def test_the_clients_bytes_are_sent_with_only_the_model_renamed(raw: bytes) -> None:
    from hub.providers.openai import _patched

    patched = _patched(_call(raw))

    assert patched is not None
    assert json.loads(patched) == {**json.loads(raw), "model": "gpt-4o"}


def test_a_stream_gets_the_usage_option_added() -> None:
    from hub.providers.openai import _patched

    patched = _patched(_call(b'{"model": "mock/gpt-4o", "messages": []}', stream=True))

    assert patched is not None
    assert json.loads(patched)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "raw",
    [
        # A tool schema with its own "model" property: which one to rename is not obvious.
        b'{"model": "mock/gpt-4o", "tools": [{"parameters": {"model": {"type": "string"}}}]}',
        # The name written with an escape: not the bytes json.dumps would give.
        b'{"model": "mock\\/gpt-4o", "messages": []}',
    ],
)
def test_bytes_that_cannot_be_patched_safely_are_left_for_reencoding(raw: bytes) -> None:
    from hub.providers.openai import _patched

    assert _patched(_call(raw)) is None


@pytest.mark.parametrize(
    ("raw", "stream"),
    [
        # An escaped key the provider's parser reads but a byte search would miss.
        (b'{"model": "mock/gpt-4o", "stream_opti\\u006fns": {"include_usage": false}}', True),
        (b'{"model": "mock/gpt-4o", "stream_options": {"include_usage": false}}', True),
    ],
)
def test_a_clients_own_stream_options_are_never_shadowed(raw: bytes, stream: bool) -> None:
    from hub.providers.openai import _patched

    assert _patched(_call(raw, stream=stream)) is None  # re-encoded, merged with ours
