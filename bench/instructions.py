"""Instructions per call on the request path, counted by callgrind (steady on a noisy machine).

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        python bench/instructions.py [--calls 1440] [--stream]
    callgrind_annotate /tmp/cg.out | head -1     # total; divide by --calls

Drives short chat calls through the whole ASGI app (every middleware, the proxy, the SQLite
store with group commit) against a canned upstream in the same process, so the count is
the hub's own work and nothing else's. Start-up is counted too: compare two commits with
the same --calls, or run twice with different --calls and take the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import make_settings, start_hub  # noqa: E402

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}
STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Hi!"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)


def upstream(request: httpx.Request) -> httpx.Response:
    if json.loads(request.content).get("stream"):
        return httpx.Response(200, content=STREAM, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json=ANSWER)


async def main(calls: int, stream: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = make_settings(f"sqlite:///{folder}/hub.db")
        hub = await start_hub(settings, httpx.MockTransport(upstream))
        body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        try:
            for _ in range(calls):
                answer = await hub.client.post("/v1/chat/completions", json=body)
                assert answer.status_code == 200, answer.text
        finally:
            await hub.client.aclose()
            await hub.app.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1440)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.stream))
