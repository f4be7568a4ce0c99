"""One span per model call: child of the caller's `traceparent`, named on the upstream request."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.tracing.attributes import request_attributes, result_attributes, span_name
from hub.tracing.upstream import TRACE_HEADERS
from middleware.call import get_call

# W3C Trace Context only: the caller's and the provider's headers, nothing vendor-specific.
PROPAGATOR = TraceContextTextMapPropagator()


class TracingMiddleware:
    """Spans each model call, placed just outside ModelCallMiddleware.

    Outside it, so the span ends after the call is settled (whether it was answered, cut
    off by a hang-up or refused), and carries the final status, tokens and credits. Only
    installed when tracing is on (hub.app): off, no request passes through it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer: Tracer,
        capture_content: bool = False,
        servers: Mapping[str, tuple[str, int | None]] | None = None,
    ) -> None:
        self.app = app
        self.tracer = tracer
        self.capture_content = capture_content
        # Provider name -> (host, port) of its base URL, for server.address.
        self.servers = dict(servers or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        if call is None:
            await self.app(scope, receive, send)
            return
        parent = PROPAGATOR.extract(_headers(scope))
        span = self.tracer.start_span(
            span_name(call),
            context=parent,
            # The conventions' kind for a call to a model service: the hub is its client.
            kind=SpanKind.CLIENT,
            attributes=request_attributes(call, self.capture_content),
            start_time=int(call.started_at * 1_000_000_000),
        )
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        token = TRACE_HEADERS.set(tuple(carrier.items()))
        failure: str | None = None
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            # A refusal raised for the credit check outside, or a cancelled request.
            failure = type(exc).__name__
            raise
        finally:
            TRACE_HEADERS.reset(token)
            span.set_attributes(result_attributes(call, self.servers, failure))
            if call.status != "success":
                span.set_status(Status(StatusCode.ERROR, call.error_code or failure))
            span.end()


def _headers(scope: Scope) -> dict[str, str]:
    """The request's trace context headers (the only ones the propagator reads)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name in (b"traceparent", b"tracestate"):
            found[name.decode("latin-1")] = value.decode("latin-1")
    return found
