"""The upstream side under stress: connections the provider closed while idle, keys that
cannot be sent, and answers that must (or must not) take a key out of service."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx

from examples.fake_provider import FakeProvider
from hub.app import create_app
from hub.provider_health import provider_report
from hub.providers.anthropic import AnthropicProvider
from hub.providers.base import json_request, upstream_headers
from hub.providers.gemini import GeminiProvider
from hub.providers.openai import OpenAIProvider
from hub.providers.pool import Credential
from hub.settings import Limits, ProviderSettings
from hub.transport import AiohttpTransport
from tests.conftest import UPSTREAM, Hub, LiveServer, live_hub, make_settings, start_hub

pytestmark = pytest.mark.anyio

BURSTS = 20
# On a loaded machine the bursts may drift off the provider's closing: more are run until a
# reused connection has been found closed at least once (else the test proves nothing).
MAX_BURSTS = 60
BURST_SIZE = 100


async def test_bursts_after_pauses_survive_a_provider_that_closes_idle_connections(
    tmp_path: Path,
) -> None:
    # A self-hosted provider behind uvicorn closes connections left idle for its keep-alive
    # timeout (1 s here). Bursts start 2 s apart and each answer takes 1 s, so the next
    # burst finds the pool's connections idle for about that long: the provider is closing
    # them as they are reused. None of those calls reached the provider: none may fail.
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    statuses: list[int] = []
    async with live_hub(db_url, ("fake/gpt-4o-mini",), upstream_keep_alive=1) as live:
        live.fake.answer_delay = 1.0
        # The test's own connections to the hub expire early: they must not go stale either.
        limits = httpx.Limits(
            max_connections=BURST_SIZE, max_keepalive_connections=BURST_SIZE, keepalive_expiry=0.5
        )
        async with httpx.AsyncClient(
            base_url=live.hub_url,
            timeout=30,
            limits=limits,
            headers={"authorization": f"Bearer {live.key}"},
        ) as client:

            async def one() -> None:
                body = {
                    "model": "fake/gpt-4o-mini",
                    "messages": [{"role": "user", "content": "hi"}],
                }
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)

            async def stale_retries() -> int:
                scraped = (await client.get("/metrics")).text
                lines = scraped.splitlines()
                found = [line for line in lines if line.startswith("aigne_hub_upstream_stale")]
                return int(found[0].split()[-1]) if found else 0

            bursts = 0
            while bursts < BURSTS or (bursts < MAX_BURSTS and await stale_retries() == 0):
                bursts += 1
                started = time.monotonic()
                async with anyio.create_task_group() as group:
                    for _ in range(BURST_SIZE):
                        group.start_soon(one)
                await anyio.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
            retried = await stale_retries()
    assert len(statuses) == bursts * BURST_SIZE
    failed = [s for s in statuses if s != 200]
    assert failed == [], f"{len(failed)} calls failed: {sorted(set(failed))}"
    # Each was sent again on a new connection, and the operator can see how often.
    assert retried > 0, f"no reused connection was found closed in {bursts} bursts"


class Dropper:
    """A raw HTTP server that answers the first request on each connection and closes the
    connection, unanswered, on the request after it (`drop_first` closes at once instead;
    `answer_all` answers every request, keeping the connection open)."""

    def __init__(self, drop_first: bool = False, answer_all: bool = False) -> None:
        self.drop_first = drop_first
        self.answer_all = answer_all
        self.received: list[int] = []  # per request, the number of its connection
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._answer(reader, writer, self.connections)
        except asyncio.IncompleteReadError:  # the client closed the connection
            pass
        finally:
            writer.close()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> None:
        answered = False
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            self.received.append(connection)
            if (answered and not self.answer_all) or self.drop_first:
                return
            answered = True
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()


async def send_twice(
    dropper: Dropper, pause: float = 0.0, idle_seconds: float = 4.0
) -> tuple[list[int | str], int]:
    """Two requests one after the other (`pause` apart) through the transport: their
    statuses (or the error), and how many were sent again on a new connection."""
    server = await asyncio.start_server(dropper.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    retries: list[None] = []
    transport = AiohttpTransport(
        idle_seconds=idle_seconds, on_stale_retry=lambda: retries.append(None)
    )
    url = httpx.URL(f"http://127.0.0.1:{port}/v1/chat/completions")
    timeout = {"connect": 5.0, "read": 5.0, "pool": 5.0}
    outcomes: list[int | str] = []
    try:
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(pause)
            request = json_request(url, upstream_headers(url.netloc), {"model": "m"}, timeout)
            try:
                response = await transport.handle_async_request(request)
                await response.aread()
                outcomes.append(response.status_code)
            except httpx.HTTPError as exc:
                outcomes.append(type(exc).__name__)
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the server's side sees the hub's connections close
    return outcomes, len(retries)


async def test_a_request_dropped_on_a_reused_connection_is_sent_once_more_on_a_new_one() -> None:
    dropper = Dropper()
    outcomes, retries = await send_twice(dropper)

    assert outcomes == [200, 200] and retries == 1
    assert dropper.received == [1, 1, 2]  # the second went out again on connection 2


async def test_a_request_dropped_on_a_new_connection_is_not_sent_again() -> None:
    # Only a reused connection can have been closed while idle: on a new one, the provider
    # may have received the request and be running it.
    dropper = Dropper(drop_first=True)
    outcomes, retries = await send_twice(dropper)

    assert outcomes == ["RemoteProtocolError"] * 2 and retries == 0
    assert dropper.received == [1, 2]


async def test_a_connection_idle_past_the_limit_is_not_reused(db_url: str) -> None:
    # The limit is the operator's (limits.upstream_idle_seconds), and the hub's transport
    # gets it: a connection unused for longer is replaced, not reused.
    settings = make_settings(db_url, limits=Limits(upstream_idle_seconds=0.2))
    assert create_app(settings).transport.idle_seconds == 0.2  # type: ignore[attr-defined]

    soon, later = Dropper(answer_all=True), Dropper(answer_all=True)
    assert (await send_twice(soon, pause=0.05, idle_seconds=0.2))[0] == [200, 200]
    assert (await send_twice(later, pause=0.4, idle_seconds=0.2))[0] == [200, 200]

    assert soon.received == [1, 1] and later.received == [1, 2]


# -- keys that cannot be sent ---------------------------------------------------------

POISON = "sk-poison-key-0001\r\nX-Injected: yes"
GOOD = "sk-good-key-00000000002"


def two_keys(base_url: str, keys: tuple[str, ...] = (POISON, GOOD)) -> ProviderSettings:
    return ProviderSettings("mock", "openai", base_url, keys, ("gpt-4o-mini",))


@pytest.fixture
def fake_upstream() -> Iterator[tuple[FakeProvider, str]]:
    fake = FakeProvider()
    with LiveServer(fake) as server:
        yield fake, server.url + "/v1"


async def test_a_configured_key_that_cannot_be_a_header_is_left_out_not_a_500(
    db_url: str, fake_upstream: tuple[FakeProvider, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = fake_upstream
    settings = replace(make_settings(db_url), providers={"mock": two_keys(url)})
    with caplog.at_level(logging.WARNING):
        hub = await start_hub(settings, None)  # the real transport
    try:
        pool = hub.app.registry.get("mock").pool
        # Stored keys are read again every 30 s: the poison one is logged once, not each time.
        pool.add(POISON, 100, "sealed")

        responses = [await hub.chat() for _ in range(4)]

        assert [r.status_code for r in responses] == [200] * 4
        assert [c.secret for c in pool.credentials] == [GOOD]
        assert {r["headers"]["authorization"] for r in fake.requests} == {f"Bearer {GOOD}"}
        warnings = [r.getMessage() for r in caplog.records if "cannot be sent" in r.getMessage()]
        assert len(warnings) == 1 and "sk-p" in warnings[0]
        assert "poison" not in caplog.text and "Injected" not in caplog.text
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


async def test_a_key_the_transport_will_not_send_fails_over_and_never_answers_500(
    db_url: str, fake_upstream: tuple[FakeProvider, str]
) -> None:
    # A key already in the pool that the transport refuses to write (as one stored before
    # keys were checked would be): the call goes to the next key; with no other, a 502.
    fake, url = fake_upstream
    settings = replace(make_settings(db_url), providers={"mock": two_keys(url, (GOOD,))})
    hub = await start_hub(settings, None)
    try:
        pool = hub.app.registry.get("mock").pool
        poison = Credential(POISON, 100, pool.build(POISON), "sk-p...")
        pool.credentials.insert(0, poison)

        answered = [await hub.chat() for _ in range(3)]
        pool.credentials.remove(pool.credentials[1])  # now the poison key is all there is
        alone = await hub.chat()

        assert [r.status_code for r in answered] == [200] * 3
        assert poison.disabled_until == float("inf")  # out for good: it can never be sent
        report = await provider_report(hub.app.registry, settings, hub.app.store)
        states = [c["state"] for c in report[0]["credentials"]]
        assert any(state.startswith("out of service") for state in states)
        assert not any("inf" in state for state in states)
        assert alone.status_code == 502
        assert alone.json()["error"]["code"] == "upstream_auth_failed"
        assert "poison" not in alone.text
        assert len(fake.requests) == 3
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


# -- which answers bench a key ------------------------------------------------------------

KEYS = ("sk-first-key-0000000001", "sk-second-key-000000002")
# Where each kind of provider is called at UPSTREAM, and the header that carries the key.
ROUTES = {
    "openai": ("/chat/completions", "authorization"),
    "anthropic": ("/messages", "x-api-key"),
    "gemini": ("/models/gpt-4o-mini:generateContent", "x-goog-api-key"),
}
# What each provider answers for an invalid key (their documented error shapes).
INVALID_KEY: dict[str, tuple[int, dict[str, Any]]] = {
    "openai": (
        401,
        {
            "error": {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    ),
    "anthropic": (
        401,
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        },
    ),
    "gemini": (
        400,
        {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            }
        },
    ),
}
# A content refusal that echoes the caller's text: the old rule benched keys on "key" in it.
MONKEY = {
    "error": {
        "message": "Your request was rejected by our safety system: 'tell me about my monkey'",
        "type": "invalid_request_error",
        "param": None,
        "code": "content_policy_violation",
    }
}


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


async def hub_of(db_url: str, upstream: respx.MockRouter, kind: str) -> Hub:
    provider = ProviderSettings("mock", kind, UPSTREAM, KEYS, ("gpt-4o-mini",))
    settings = replace(make_settings(db_url), providers={"mock": provider})
    return await start_hub(settings, httpx.MockTransport(upstream.async_handler))


@pytest.fixture
async def openai_hub(db_url: str, upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    hub = await hub_of(db_url, upstream, "openai")
    yield hub
    await hub.client.aclose()
    await hub.app.shutdown()


def in_service(hub: Hub) -> list[Credential]:
    pool = hub.app.registry.get("mock").pool
    return [c for c in pool.credentials if c.disabled_until <= pool.clock()]


async def test_a_content_refusal_echoing_the_callers_words_benches_no_key(
    openai_hub: Hub, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(403, json=MONKEY)

    responses = [await openai_hub.chat() for _ in range(13)]

    # The caller is told why (it is their request), and no key was touched for it.
    assert {r.status_code for r in responses} == {403}
    assert "my monkey" in responses[0].json()["error"]["message"]
    assert len(in_service(openai_hub)) == 2
    assert route.call_count == 13  # one try each: another key would be refused the same


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_an_invalid_key_answer_benches_the_key(
    db_url: str, upstream: respx.MockRouter, kind: str
) -> None:
    path, header = ROUTES[kind]
    status, body = INVALID_KEY[kind]
    upstream.post(path).respond(status, json=body)
    hub = await hub_of(db_url, upstream, kind)
    try:
        response = await hub.chat()

        # Not the caller's fault: a gateway error, and the first key tried is out.
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_auth_failed"
        first = upstream.calls[0].request.headers[header].removeprefix("Bearer ")
        assert [c.secret for c in in_service(hub)] == [k for k in KEYS if k != first]
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


async def test_a_flood_of_provoked_key_refusals_cannot_take_every_key_out(
    db_url: str, upstream: respx.MockRouter
) -> None:
    # Anthropic's permission_error is about the key, but a caller may provoke it (a model
    # or feature the key may not use): however many, one key stays in service.
    refusal = {"type": "error", "error": {"type": "permission_error", "message": "not allowed"}}
    upstream.post("/messages").respond(403, json=refusal)
    hub = await hub_of(db_url, upstream, "anthropic")
    try:
        responses = [await hub.chat() for _ in range(13)]

        assert {r.status_code for r in responses} == {502}
        assert len(in_service(hub)) == 1
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


@pytest.mark.parametrize(
    ("adapter", "status", "body", "about_key"),
    [
        (OpenAIProvider, 401, {"error": {"message": "no", "code": None}}, True),
        (OpenAIProvider, 402, {"error": {"message": "Insufficient credits", "code": 402}}, True),
        (
            OpenAIProvider,
            429,
            {"error": {"type": "insufficient_quota", "code": "insufficient_quota"}},
            True,
        ),
        (
            OpenAIProvider,
            429,
            {"error": {"message": "api key rate limit", "code": "rate_limit_exceeded"}},
            False,
        ),
        (OpenAIProvider, 403, MONKEY, False),
        (
            OpenAIProvider,
            403,
            {
                "error": {
                    "code": "unsupported_country_region_territory",
                    "type": "request_forbidden",
                }
            },
            False,
        ),
        (OpenAIProvider, 403, {"error": {"message": "flagged: my api key", "code": 403}}, False),
        (AnthropicProvider, 403, {"error": {"type": "permission_error"}}, True),
        (
            AnthropicProvider,
            400,
            {"error": {"type": "invalid_request_error", "message": "key"}},
            False,
        ),
        (
            GeminiProvider,
            403,
            {
                "error": {
                    "status": "PERMISSION_DENIED",
                    "details": [{"reason": "CONSUMER_SUSPENDED"}],
                }
            },
            True,
        ),
        (
            GeminiProvider,
            403,
            {"error": {"status": "PERMISSION_DENIED", "message": "api key"}},
            False,
        ),
        (
            GeminiProvider,
            400,
            {"error": {"status": "FAILED_PRECONDITION", "message": "key"}},
            False,
        ),
    ],
)
def test_each_adapter_reads_a_refused_key_from_the_error_type_not_its_words(
    adapter: Any, status: int, body: dict[str, Any], about_key: bool
) -> None:
    provider = adapter(ProviderSettings("p", "x", UPSTREAM, KEYS, ()), {})
    assert provider.refuses_key(status, httpx.Response(status, json=body).content) is about_key
    assert provider.refuses_key(status, b"<html>key auth credential</html>") is (
        status in (401, 402)
    )
