"""End to end with the official AIGNE SDK client: `@aigne/aigne-hub`'s AIGNEHubChatModel, run by
Node against the hub under real uvicorn, in front of the example fake provider.

tests/aigne_client/chat.mjs finds the hub as the SDK does in production (GET
/__blocklet__.js?type=json, then POST <mountPoint>/api/v2/chat) and makes one non-streaming and one
streaming call. Skipped only where `node` or `npm` is missing, and never when CI is set.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from examples.fake_provider import REPLY
from middleware.money import to_credits
from tests.conftest import Live, live_hub
from tests.node_clients import client_env, installed

pytestmark = pytest.mark.anyio

CLIENT_DIR = Path(__file__).parent / "aigne_client"
MODEL = "fake/gpt-4o-mini"
INPUT_RATE = 10_000  # units per token: 10**-6 credit
OUTPUT_RATE = 20_000
NODE_TIMEOUT = 120


@pytest.fixture(scope="session")
def aigne_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/aigne_client/ copied to a temporary folder and `npm install`ed, once a session."""
    return installed(
        tmp_path_factory,
        CLIENT_DIR,
        ("package.json", "package-lock.json", "chat.mjs"),
        "the AIGNE client",
    )


_env = client_env


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    async with live_hub(db_url, (MODEL,), rates=(INPUT_RATE, OUTPUT_RATE)) as started:
        yield started


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lines(stdout: str) -> dict[str, dict[str, Any]]:
    """chat.mjs's output, one JSON object a line, by its `mode`."""
    by_mode: dict[str, dict[str, Any]] = {}
    for raw in stdout.splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            raise AssertionError(f"chat.mjs printed a line that is not JSON: {raw!r}") from None
        assert isinstance(line, dict) and "mode" in line, raw
        by_mode[line["mode"]] = line
    assert set(by_mode) == {"invoke", "stream"}, stdout
    return by_mode


async def test_the_official_aigne_client_chats_through_the_hub(
    aigne_client: Path, live: Live
) -> None:
    env = _env(HUB_URL=live.hub_url, HUB_KEY=live.key, MODEL=MODEL)
    try:
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                ["node", "chat.mjs"],
                cwd=aigne_client,
                capture_output=True,
                text=True,
                timeout=NODE_TIMEOUT,
                env=env,
            )
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"node chat.mjs ran over {NODE_TIMEOUT} s: {exc.stderr!r}") from None
    assert done.returncode == 0, f"node chat.mjs exited {done.returncode}: {done.stderr}"
    answers = _lines(done.stdout)

    for answer in answers.values():
        assert answer["text"] == REPLY, answer
        usage = answer["usage"]
        assert isinstance(usage, dict), answer
        assert _number(usage.get("inputTokens")) and _number(usage.get("outputTokens")), answer
        assert _number(usage.get("aigneHubCredits")) and usage["aigneHubCredits"] > 0, answer
        assert isinstance(answer["model"], str) and "gpt-4o-mini" in answer["model"], answer
    # The stream came as deltas, not as one block at the end.
    assert answers["stream"]["chunks"] > 1, answers["stream"]

    calls = await live.wait_for_calls(2)
    assert len(calls) == 2, calls
    by_stream = {call["stream"]: call for call in calls}
    assert set(by_stream) == {False, True}, calls
    for mode, stream in (("invoke", False), ("stream", True)):
        call, usage = by_stream[stream], answers[mode]["usage"]
        assert call["status"] == "success", call
        assert call["model"] == MODEL, call
        assert call["input_tokens"] > 0 and call["output_tokens"] > 0, call
        assert (usage["inputTokens"], usage["outputTokens"]) == (
            call["input_tokens"],
            call["output_tokens"],
        ), (mode, usage, call)
        assert call["credits"] == (
            call["input_tokens"] * INPUT_RATE + call["output_tokens"] * OUTPUT_RATE
        ), call
        # The client is told, in credits, exactly what the hub charged (units are 10**-10).
        charged = float(to_credits(call["credits"]))
        assert math.isclose(usage["aigneHubCredits"], charged, rel_tol=1e-9), (mode, usage, call)
