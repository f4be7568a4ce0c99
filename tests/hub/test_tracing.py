"""OpenTelemetry spans of model calls: collected with the SDK's in-memory exporter and by a
local OTLP/HTTP collector, through the whole hub with the upstream mocked by respx."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hub.settings import ConfigError, load_settings
from hub.tracing import TracingSettings
from middleware.money import credits_text
from tests.conftest import Hub, LiveServer, make_settings, start_hub
from tests.hub.test_proxy import STREAM, completion

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


class Collector:
    """A stand-in OTLP/HTTP collector: keeps the bodies posted to /v1/traces."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = Request(scope, receive)
        self.posts.append((request.url.path, await request.body()))
        await Response(b"", media_type="application/x-protobuf")(scope, receive, send)


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    app = Collector()
    with LiveServer(app) as server:
        yield app, server.url


@pytest.fixture
async def traced_hub(
    tmp_path: Path, mock_upstream: respx.MockRouter, collector: tuple[Collector, str]
) -> AsyncIterator[tuple[Hub, InMemorySpanExporter]]:
    tracing = TracingSettings(otlp_endpoint=collector[1])
    settings = make_settings(f"sqlite:///{tmp_path / 'hub.db'}", tracing=tracing)
    hub = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    assert hub.app.tracer_provider is not None
    exporter = InMemorySpanExporter()
    hub.app.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield hub, exporter
    await hub.client.aclose()
    await hub.app.shutdown()


async def chat(hub: Hub, headers: dict[str, str] | None = None, **body: object) -> httpx.Response:
    messages = [{"role": "user", "content": "Say hi"}]
    sent = {"model": "mock/gpt-4o-mini", "messages": messages, **body}
    return await hub.client.post("/v1/chat/completions", json=sent, headers=headers)


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


async def test_streamed_call_is_a_genai_span_in_the_callers_trace_named_upstream(
    traced_hub: tuple[Hub, InMemorySpanExporter],
    mock_upstream: respx.MockRouter,
    collector: tuple[Collector, str],
) -> None:
    hub, exporter = traced_hub
    route = mock_upstream.post("/chat/completions").respond(
        content=STREAM, headers={"content-type": "text/event-stream"}
    )
    response = await chat(hub, {"traceparent": TRACEPARENT}, stream=True)
    assert response.status_code == 200 and "[DONE]" in response.text

    span = only_span(exporter)
    assert span.name == "chat mock/gpt-4o-mini"
    assert span.kind == SpanKind.CLIENT
    assert span.parent is not None and span.parent.is_remote
    assert format(span.parent.span_id, "016x") == CALLER_SPAN
    assert format(span.context.trace_id, "032x") == TRACE_ID
    attributes = dict(span.attributes or {})
    [call] = await hub.calls()
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "mock/gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "mock"
    assert attributes["server.address"] == "upstream.test"
    assert attributes["gen_ai.usage.input_tokens"] == 5
    assert attributes["gen_ai.usage.output_tokens"] == 2
    assert isinstance(attributes["gen_ai.server.time_to_first_token"], float)
    assert attributes["aigne_hub.call.id"] == call["id"]
    assert attributes["aigne_hub.credits"] == credits_text(call["credits"]) == "0.000009"
    assert attributes["aigne_hub.status"] == "success"
    assert attributes["aigne_hub.client_format"] == "openai"
    assert attributes["aigne_hub.stream"] is True
    assert span.status.status_code != StatusCode.ERROR
    # The prompt ("Say hi") and the answer ("Hi there") stay out of the span by default.
    text = " ".join(str(v) for v in attributes.values())
    assert "Say hi" not in text and "Hi" not in text.replace("Hub", "")

    # The provider was asked in the same trace, as a child of the hub's span.
    sent = route.calls.last.request.headers["traceparent"]
    assert sent == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"

    # Shutting down sends the batched span to the OTLP endpoint, protobuf over HTTP.
    await hub.app.shutdown()
    app, _ = collector
    assert [path for path, _ in app.posts] == ["/v1/traces"]
    exported = ExportTraceServiceRequest.FromString(app.posts[0][1])
    names = [
        s.name for r in exported.resource_spans for scoped in r.scope_spans for s in scoped.spans
    ]
    assert names == ["chat mock/gpt-4o-mini"]
    service = {a.key: a.value.string_value for a in exported.resource_spans[0].resource.attributes}
    assert service["service.name"] == "aigne-hub"


async def test_call_without_traceparent_starts_a_trace_and_failures_are_errors(
    traced_hub: tuple[Hub, InMemorySpanExporter], mock_upstream: respx.MockRouter
) -> None:
    hub, exporter = traced_hub
    mock_upstream.post("/chat/completions").respond(500, json={"error": {"message": "down"}})
    response = await hub.chat()
    assert response.status_code >= 500
    span = only_span(exporter)
    assert span.parent is None
    assert span.status.status_code == StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["aigne_hub.status"] == "failed"
    assert str(attributes["error.type"]).startswith("upstream_")


async def test_prompt_is_on_the_span_only_when_capture_content_is_on(
    tmp_path: Path, mock_upstream: respx.MockRouter, collector: tuple[Collector, str]
) -> None:
    tracing = TracingSettings(otlp_endpoint=collector[1], capture_content=True)
    settings = make_settings(f"sqlite:///{tmp_path / 'hub.db'}", tracing=tracing)
    hub = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    assert hub.app.tracer_provider is not None
    exporter = InMemorySpanExporter()
    hub.app.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        mock_upstream.post("/chat/completions").respond(json=completion(9, 3))
        assert (await hub.chat()).status_code == 200
        attributes = dict(only_span(exporter).attributes or {})
        assert "Say hi" in str(attributes["gen_ai.input.messages"])
        assert attributes["gen_ai.usage.input_tokens"] == 9
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


async def test_tracing_off_adds_nothing_and_forwards_no_trace(
    tmp_path: Path, mock_upstream: respx.MockRouter
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'hub.db'}")
    hub = await start_hub(settings, httpx.MockTransport(mock_upstream.async_handler))
    try:
        assert hub.app.tracer_provider is None
        route = mock_upstream.post("/chat/completions").respond(json=completion())
        assert (await chat(hub, {"traceparent": TRACEPARENT})).status_code == 200
        assert "traceparent" not in route.calls.last.request.headers
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()


def test_tracing_off_never_loads_the_sdk(tmp_path: Path) -> None:
    """Zero cost when not configured: building the hub sets up no tracer, exporter or layer.

    (redis-py imports parts of OpenTelemetry's API and metrics SDK by itself when they are
    installed; the tracing SDK, the exporter and the hub's tracing layer stay unloaded.)"""
    script = (
        "import sys\n"
        "from hub.app import create_app\n"
        "from hub.settings import load_settings\n"
        f"settings = load_settings(env={{'AIGNE_HUB_DATABASE_URL': 'sqlite:///{tmp_path}/h.db'}})\n"
        "create_app(settings)\n"
        "loaded = ('opentelemetry.sdk.trace', 'opentelemetry.exporter', 'hub.tracing.setup',"
        " 'hub.tracing.middleware')\n"
        "print(sorted(m for m in sys.modules if m.startswith(loaded)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_tracing_settings_from_the_file_and_the_standard_variables(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        '[tracing]\notlp_endpoint = "http://collector:4318"\ncapture_content = true\n'
    )
    tracing = load_settings(config, env={}).tracing
    assert tracing.enabled and tracing.capture_content
    assert tracing.traces_url() == "http://collector:4318/v1/traces"
    assert not load_settings(env={}).tracing.enabled
    from_env = load_settings(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}).tracing
    assert from_env.enabled and from_env.traces_url() is None
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    assert not load_settings(env=disabled).tracing.enabled
    config.write_text('[tracing]\notlp_endpoint = "collector:4318"\n')
    with pytest.raises(ConfigError, match="tracing.otlp_endpoint"):
        load_settings(config, env={})
    config.write_text("[tracing]\nsample = 1\n")
    with pytest.raises(ConfigError, match="tracing"):
        load_settings(config, env={})
