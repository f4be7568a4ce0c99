"""Codex (`@openai/codex`, a native binary in its npm package) and the `openai` Node SDK's
Responses API, against the hub under real uvicorn in front of the example fake provider.

Codex is given the hub as a custom provider (`wire_api = "responses"`) in a temporary
CODEX_HOME and HOME, and answers one prompt on a model whose provider serves the Responses
API (pass-through) and on an Anthropic one (translated). The fake calls Codex's first tool
before answering, so each run also carries a tool call and its output back. Skipped only
where `node` or `npm` is missing, and never when CI is set.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from examples.fake_provider import REPLY
from tests.conftest import Live, live_hub
from tests.hub.test_responses_inbound_live import (
    ANTHROPIC,
    INPUT_RATE,
    MODELS,
    OUTPUT_RATE,
    PASS_THROUGH,
    hub_settings,
    upstream_tokens,
)
from tests.node_clients import client_env, installed

pytestmark = pytest.mark.anyio

CLIENT_DIR = Path(__file__).parent
RUN_TIMEOUT = 90


@pytest.fixture(scope="session")
def codex_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This folder's package.json and lock copied to a temporary folder and installed."""
    return installed(
        tmp_path_factory,
        CLIENT_DIR,
        ("package.json", "package-lock.json", "responses.mjs"),
        "Codex and the openai SDK",
    )


_env = client_env


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: what is recorded and charged is checked on both databases by the SDK
    tests (tests/hub/test_responses_inbound_live.py); these runs are the slow ones."""
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    async with live_hub(
        db_url,
        MODELS,
        rates=(INPUT_RATE, OUTPUT_RATE),
        settings_for=lambda url: hub_settings(db_url, url),
    ) as started:
        yield started


async def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                args,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{args[0]} ran over {RUN_TIMEOUT} s: {exc.stderr!r}") from None


async def _check_charges(live: Live) -> None:
    """Every call the hub recorded succeeded, with the fake's token counts, at the rate."""
    requests = live.fake.requests
    calls = await live.wait_for_calls(len(requests))
    assert len(calls) == len(requests) and all(c["status"] == "success" for c in calls), calls
    prompts = sorted(upstream_tokens(r) for r in requests)
    assert sorted(c["input_tokens"] for c in calls) == prompts, (calls, prompts)
    for call in calls:
        cost = call["input_tokens"] * INPUT_RATE + call["output_tokens"] * OUTPUT_RATE
        assert call["credits"] == cost and call["output_tokens"] > 0, call


@pytest.mark.parametrize("model", [PASS_THROUGH, ANTHROPIC])
async def test_codex_answers_a_prompt_through_the_hub(
    codex_dir: Path, live: Live, model: str, tmp_path: Path
) -> None:
    home, codex_home, work = tmp_path / "home", tmp_path / "codex", tmp_path / "work"
    for folder in (home, codex_home, work):
        folder.mkdir()
    # web_search is a built-in tool the hub refuses (billed apart from tokens): off, as
    # the README says to set it.
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "hub"\n'
        'web_search = "disabled"\n'
        # Nothing of the test may reach the internet.
        "check_for_update_on_startup = false\n"
        "[analytics]\nenabled = false\n"
        "[model_providers.hub]\n"
        'name = "AIGNE Hub"\n'
        f'base_url = "{live.hub_url}/v1"\n'
        'env_key = "AIGNE_HUB_KEY"\n'
        'wire_api = "responses"\n'
    )
    codex = codex_dir / "node_modules" / ".bin" / "codex"
    env = _env(HOME=str(home), CODEX_HOME=str(codex_home), AIGNE_HUB_KEY=live.key)
    done = await _run([str(codex), "exec", "--skip-git-repo-check", "Say hi"], cwd=work, env=env)
    assert done.returncode == 0, f"codex exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert REPLY in done.stdout, done.stdout

    # The fake called Codex's first tool, Codex ran it and sent its output back, and the
    # fake then answered: at least two calls, the last one carrying the tool's output.
    paths = {r["path"] for r in live.fake.requests}
    assert paths == {"/v1/responses" if model == PASS_THROUGH else "/v1/messages"}, paths
    assert len(live.fake.requests) >= 2
    last = json.dumps(live.fake.requests[-1]["body"])
    assert ("function_call_output" if model == PASS_THROUGH else "tool_result") in last
    await _check_charges(live)


async def test_the_openai_node_sdk_calls_responses_whole_and_streamed(
    codex_dir: Path, live: Live
) -> None:
    env = _env(HUB_URL=live.hub_url, HUB_KEY=live.key, MODELS=",".join(MODELS))
    done = await _run(["node", "responses.mjs"], cwd=codex_dir, env=env)
    assert done.returncode == 0, f"node exited {done.returncode}: {done.stderr}"
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["model"], x["mode"]) for x in lines] == [
        (m, mode) for m in MODELS for mode in ("create", "stream")
    ]
    for line in lines:
        assert line["text"] == REPLY, line
        assert line["usage"]["output_tokens"] == len(REPLY.split()), line
        assert line["usage"]["total_tokens"] == (
            line["usage"]["input_tokens"] + line["usage"]["output_tokens"]
        )
        if line["mode"] == "stream":
            assert line["types"][0] == "response.created", line
            assert line["types"][-1] == "response.completed", line
    await _check_charges(live)
