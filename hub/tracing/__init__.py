"""OpenTelemetry spans of model calls, exported by OTLP/HTTP when an endpoint is configured.

This package's root imports no OpenTelemetry module: with tracing off, the hub never loads
the SDK (hub.app imports hub.tracing.setup only when tracing is on).
"""

from hub.tracing.config import KEYS, TracingSettings, read_tracing
from hub.tracing.upstream import add_trace_headers

__all__ = ["KEYS", "TracingSettings", "add_trace_headers", "read_tracing"]
