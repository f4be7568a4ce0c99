"""The trace context a call's upstream request carries: read by the proxy, no SDK needed.

Kept apart from the SDK on purpose: the proxy imports this module whether or not tracing is
on, and with tracing off it costs one context-variable read per upstream attempt.
"""

from __future__ import annotations

from contextvars import ContextVar

import httpx

# Set by the tracing middleware for the call it traces: `traceparent` (and `tracestate`)
# naming the call's span, so the provider's own spans (if it traces) join the caller's trace.
TRACE_HEADERS: ContextVar[tuple[tuple[str, str], ...]] = ContextVar(
    "aigne_hub_trace_headers", default=()
)


def add_trace_headers(request: httpx.Request) -> None:
    """Name the traced call's span on an upstream request; nothing when tracing is off."""
    for name, value in TRACE_HEADERS.get():
        request.headers[name] = value
