"""Claude Code (`@anthropic-ai/claude-code`, pinned) and the Anthropic Node SDK
(`@anthropic-ai/sdk`, pinned) against a live hub in front of the example fake provider.

Claude Code is pointed at the hub as its documentation says for a gateway:
ANTHROPIC_BASE_URL (without /v1), ANTHROPIC_AUTH_TOKEN (sent as a Bearer key) and
ANTHROPIC_MODEL, with a temporary HOME and no other traffic. It must answer a prompt on a
model served by Anthropic's own protocol (the bytes pass through) and on one an
OpenAI-compatible provider serves (translated both ways). Skipped only where `node` or
`npm` is missing, and never when CI is set.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from examples.fake_provider import REPLY
from tests.conftest import Live
from tests.hub.test_anthropic_inbound_sdk import (
    INPUT_RATE,
    NATIVE,
    OUTPUT_RATE,
    TRANSLATED,
    TRANSLATED_TOOLS,
    anthropic_hub,
)
from tests.node_clients import client_env, installed

pytestmark = pytest.mark.anyio

CLIENT_DIR = Path(__file__).parent
RUN_TIMEOUT = 120


@pytest.fixture(scope="session")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This folder's package.json and lock copied to a temporary folder and installed
    (`npm ci`: exactly the pinned versions), once a session."""
    return installed(
        tmp_path_factory,
        CLIENT_DIR,
        ("package.json", "package-lock.json", "messages.mjs"),
        "Claude Code and the Anthropic SDK",
    )


def _env(**extra: str) -> dict[str, str]:
    # The caller's own Anthropic settings must not leak into the clients under test.
    return client_env(drop_prefixes=("ANTHROPIC_", "CLAUDE_"), **extra)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with anthropic_hub(tmp_path) as started:
        yield started


async def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )

    return await anyio.to_thread.run_sync(run)


async def _billed_exactly(live: Live, count: int) -> list[dict[str, Any]]:
    """Every call succeeded and is charged its tokens at the model's rate, to the unit."""
    calls = await live.wait_for_calls(count)
    assert len(calls) == count
    for call in calls:
        assert call["status"] == "success", call
        expected = call["input_tokens"] * INPUT_RATE + call["output_tokens"] * OUTPUT_RATE
        assert call["credits"] == expected and call["output_tokens"] > 0
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("model", [NATIVE, TRANSLATED, TRANSLATED_TOOLS])
async def test_claude_code_answers_a_prompt_through_the_hub(
    clients: Path, live: Live, model: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _env(
        HOME=str(home),
        ANTHROPIC_BASE_URL=live.hub_url,
        ANTHROPIC_AUTH_TOKEN=live.key,
        ANTHROPIC_MODEL=model,
        ANTHROPIC_SMALL_FAST_MODEL=model,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )
    claude = str(clients / "node_modules" / ".bin" / "claude")
    done = await _run([claude, "-p", "Say hi"], home, env)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert REPLY in done.stdout
    sent = live.fake.requests
    # It offers its tools: the fake calls one (with arguments Claude Code refuses) where it
    # calls tools, and answers once the tool's result is back, so the tool_use and
    # tool_result blocks make the round trip; each call is billed exactly.
    assert len(sent) >= (1 if model == TRANSLATED else 2)
    if model == NATIVE:
        assert {r["path"] for r in sent} == {"/v1/messages"}
        assert all(r["body"]["model"] == "claude-sonnet-4" for r in sent)
        assert all("claude-code" in r["headers"].get("anthropic-beta", "") for r in sent)
        # Its own system prompt, tools and cache marks reach Anthropic as it wrote them.
        assert any("cache_control" in json.dumps(r["body"]["system"]) for r in sent)
    else:
        assert {r["path"] for r in sent} == {"/v1/chat/completions"}
        assert all(r["body"]["model"] == model.split("/")[1] and r["body"]["tools"] for r in sent)
        if model == TRANSLATED_TOOLS:
            assert sent[-1]["body"]["messages"][-1]["role"] == "tool"
    await _billed_exactly(live, len(sent))


async def test_the_node_sdk_streams_and_answers_through_the_hub(clients: Path, live: Live) -> None:
    done = await _run(
        ["node", "messages.mjs", live.hub_url, live.key, NATIVE, TRANSLATED_TOOLS],
        clients,
        _env(),
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for model in (NATIVE, TRANSLATED_TOOLS):
        got = results[model]
        assert got["whole"]["content"] == [{"type": "text", "text": REPLY}]
        assert got["whole"]["usage"]["output_tokens"] == len(REPLY.split())
        assert got["events"][0] == "message_start" and got["events"][-1] == "message_stop"
        [tool_use] = got["streamed"]["content"]
        assert (tool_use["type"], tool_use["name"]) == ("tool_use", "get_weather")
        assert tool_use["input"] == {"city": "Paris"}
        assert got["streamed"]["stop_reason"] == "tool_use"
    await _billed_exactly(live, 4)
