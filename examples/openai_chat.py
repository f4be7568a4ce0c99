"""Chat through the hub with the official `openai` SDK: one streamed call, one plain call.

    AIGNE_HUB_KEY=ahk_... python examples/openai_chat.py [model]

The hub speaks the OpenAI API, so the SDK needs only its `base_url` and a hub key.
AIGNE_HUB_URL sets the hub (default http://127.0.0.1:8090/v1); the model defaults to
fake/gpt-4o-mini, served by examples/fake_provider.py with examples/hub.toml.
"""

from __future__ import annotations

import argparse
import os
import sys

import openai
from openai import OpenAI
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageParam

DEFAULT_URL = "http://127.0.0.1:8090/v1"
DEFAULT_MODEL = "fake/gpt-4o-mini"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say hello and tell me who you are."}
]


def describe(usage: CompletionUsage | None) -> str:
    if usage is None:
        return "usage: not reported"
    return (
        f"usage: {usage.prompt_tokens} prompt tokens, {usage.completion_tokens} completion tokens"
    )


def chat(client: OpenAI, model: str) -> None:
    print(f"streaming from {model}:")
    # include_usage adds a last chunk with no choices and the usage of the whole stream.
    stream = client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    usage: CompletionUsage | None = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage is not None:
            usage = chunk.usage
    print()
    print(describe(usage))

    print(f"\nnot streaming, from {model}:")
    completion = client.chat.completions.create(model=model, messages=MESSAGES)
    print(completion.choices[0].message.content)
    print(describe(completion.usage))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="environment: AIGNE_HUB_KEY (required, a hub key ahk_...), "
        f"AIGNE_HUB_URL (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL, help=f"(default {DEFAULT_MODEL})"
    )
    args = parser.parse_args(argv)
    key = os.environ.get("AIGNE_HUB_KEY")
    if not key:
        print(
            "openai_chat.py: set AIGNE_HUB_KEY to a hub API key "
            "(create one with: aigne-hub keys create --user did:abt:alice).",
            file=sys.stderr,
        )
        return 2
    url = os.environ.get("AIGNE_HUB_URL") or DEFAULT_URL
    # No retries: a refused call (401, 402, unknown model) should be shown, not repeated.
    client = OpenAI(base_url=url, api_key=key, max_retries=0)
    try:
        chat(client, args.model)
    except openai.APIConnectionError:
        print(f"\nopenai_chat.py: cannot reach the hub at {url}; is it running?", file=sys.stderr)
        return 1
    except openai.APIError as exc:
        # A refused call (its message has the status and the hub's reason: no credits, bad
        # key, unpriced model) or an error event in the middle of a stream.
        print(f"\nopenai_chat.py: {exc.message}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
