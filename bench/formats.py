"""What a client format costs: the Responses API and Anthropic Messages against OpenAI chat,
in one run.

    python bench/formats.py [--requests 300]

Starts the example fake provider and the hub (one worker each, SQLite), then times one
request at a time, whole and streamed, for: OpenAI chat passed through, the Responses API
passed through (the fake serves it) and translated to chat (the same fake as a provider
that serves chat only), and Anthropic Messages passed through (the fake's Anthropic side)
and translated to chat. Prints p50 latencies as ratios to chat's from the same run (this
machine is shared: absolute numbers drift). A translated stream's extra time over the
passed-through one, per streamed chunk, is the cost of translating and rendering a chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from run import hub_setup, start, wait_up  # type: ignore[import-not-found]

CHAT = {"model": "fake/gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]}
RESPONSES = {"model": "fake/gpt-4o-mini", "input": "Say hi"}
MESSAGES = {
    "model": "claude/claude-sonnet-4",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Say hi"}],
}
# The event that carries one piece of streamed text, per format.
TEXT_EVENT = {
    "/v1/responses": b"event: response.output_text.delta",
    "/v1/messages": b"event: content_block_delta",
}
ROUNDS = 5


async def timed(
    session: aiohttp.ClientSession, url: str, key: str, body: dict[str, object]
) -> float:
    started = time.perf_counter()
    async with session.post(url, json=body, headers={"authorization": f"Bearer {key}"}) as answer:
        await answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url} answered {answer.status}: {body}")
    return time.perf_counter() - started


async def chunks(hub: str, path: str, key: str, body: dict[str, object]) -> int:
    """The text deltas of one streamed answer in the format of `path`."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            hub + path, json={**body, "stream": True}, headers={"authorization": f"Bearer {key}"}
        ) as answer:
            return (await answer.read()).count(TEXT_EVENT[path])


async def samples(url: str, key: str, body: dict[str, object], n: int) -> list[float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(5):
            await timed(session, url, key, body)
        return [await timed(session, url, key, body) for _ in range(n)]


async def main() -> None:
    parser = argparse.ArgumentParser(description="Client formats vs OpenAI chat through the hub")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    fake_port, hub_port = 8310, 8311
    tmp = tempfile.mkdtemp(prefix="aigne-hub-formats-")
    config = Path(tmp) / "hub.toml"
    fake = f"http://127.0.0.1:{fake_port}/v1"
    config.write_text(
        f'[server]\nport = {hub_port}\n[database]\nurl = "sqlite:///{tmp}/bench.db"\n'
        f'[providers.fake]\nbase_url = "{fake}"\napi_keys = ["bench"]\nresponses_api = true\n'
        f'[providers.chat]\nbase_url = "{fake}"\napi_keys = ["bench"]\n'
        f'[providers.claude]\nkind = "anthropic"\nbase_url = "http://127.0.0.1:{fake_port}"\n'
        'api_keys = ["bench"]\nmodels = ["claude-sonnet-4"]\n'
    )
    env = {**os.environ, "AIGNE_HUB_CONFIG": str(config)}
    procs = [start(["examples/fake_provider.py", "--port", str(fake_port)])]
    try:
        await wait_up(f"{fake}/models")
        key = hub_setup(env, 1)[0]
        procs.append(start(["-m", "hub.cli", "serve", "--log-level", "error"], env=env))
        hub = f"http://127.0.0.1:{hub_port}"
        await wait_up(f"{hub}/health")
        translated = {**RESPONSES, "model": "chat/gpt-4o-mini"}
        for model in ("chat/gpt-4o-mini", "claude/claude-sonnet-4"):
            rate = ["--input", "0.15", "--output", "0.6", "--per-million"]
            subprocess.run(
                [sys.executable, "-m", "hub.cli", "rates", "set", model, *rate],
                env=env,
                check=True,
                capture_output=True,
            )
        messages_translated = {**MESSAGES, "model": "fake/gpt-4o-mini"}
        targets = [
            (f"{name}{' stream' if stream else ''}", hub + path, {**body, "stream": stream})
            for stream in (False, True)
            for name, path, body in (
                ("chat", "/v1/chat/completions", CHAT),
                ("responses", "/v1/responses", RESPONSES),
                ("responses translated", "/v1/responses", translated),
                ("messages", "/v1/messages", MESSAGES),
                ("messages translated", "/v1/messages", messages_translated),
            )
        ]
        # In alternating rounds, so that load from elsewhere on this shared machine lands
        # on every target rather than on whichever ran at that moment.
        times: dict[str, list[float]] = {label: [] for label, _, _ in targets}
        for _ in range(ROUNDS):
            for label, url, body in targets:
                times[label] += await samples(url, key, body, args.requests // ROUNDS)
        figures = {label: statistics.median(t) * 1000 for label, t in times.items()}
        for label, value in figures.items():
            base = figures["chat stream" if label.endswith("stream") else "chat"]
            print(f"{label:28} p50 {value:6.2f} ms  ({value / base:.2f}x chat)")
        for name, path, body in (
            ("responses", "/v1/responses", translated),
            ("messages", "/v1/messages", messages_translated),
        ):
            n = await chunks(hub, path, key, body)
            extra = figures[f"{name} translated stream"] - figures[f"{name} stream"]
            print(f"{name} translation, per streamed chunk: {extra / n * 1000:.0f} us ({n} chunks)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
