"""Reading the OpenAI wire format: usage from whole bodies and error messages."""

from __future__ import annotations

import json

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
