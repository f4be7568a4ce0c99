"""The OpenTelemetry SDK, set up only when tracing is on: a tracer provider and its exporter."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from starlette.types import ASGIApp

from hub.tracing.config import TracingSettings
from hub.tracing.middleware import TracingMiddleware

TRACER_NAME = "aigne_hub"


def tracer_provider(
    settings: TracingSettings, exporter: SpanExporter | None = None
) -> TracerProvider:
    """The hub's own provider (not the process-wide one, which may be set only once),
    exporting in batches from a thread of the SDK's, never from the request's path."""
    resource = Resource.create({SERVICE_NAME: settings.service_name})
    provider = TracerProvider(resource=resource)
    if exporter is None:
        # No endpoint in the file: the exporter reads OTEL_EXPORTER_OTLP_*ENDPOINT itself.
        exporter = OTLPSpanExporter(endpoint=settings.traces_url())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def traced(
    app: ASGIApp,
    provider: TracerProvider,
    settings: TracingSettings,
    base_urls: Mapping[str, str],
) -> TracingMiddleware:
    """`app` with a span per model call; `base_urls` names each provider's address."""
    servers: dict[str, tuple[str, int | None]] = {}
    for name, url in base_urls.items():
        parts = urlsplit(url)
        if parts.hostname:
            servers[name] = (parts.hostname, parts.port)
    return TracingMiddleware(
        app,
        tracer=provider.get_tracer(TRACER_NAME),
        capture_content=settings.capture_content,
        servers=servers,
    )
