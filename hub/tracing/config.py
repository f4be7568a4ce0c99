"""`[tracing]` in the TOML: where OpenTelemetry spans of model calls are exported, if anywhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

KEYS = {"otlp_endpoint", "capture_content", "service_name"}
# The standard variables the OTLP exporter reads itself: either one switches tracing on.
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(frozen=True)
class TracingSettings:
    # The collector's base address (`http://collector:4318`); spans go to its /v1/traces.
    # None, with no OTEL_EXPORTER_OTLP_*ENDPOINT in the environment either: tracing is off,
    # and no SDK is set up at all.
    otlp_endpoint: str | None = None
    # Whether spans carry the request's messages (gen_ai.input.messages). Off: people's text
    # stays in the hub, as in the call log.
    capture_content: bool = False
    service_name: str = "aigne-hub"
    # Set when the environment names the endpoint: the exporter reads it from there.
    from_environment: bool = False

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None or self.from_environment

    def traces_url(self) -> str | None:
        """The OTLP/HTTP traces address from the file; None: the exporter reads the env."""
        if self.otlp_endpoint is None:
            return None
        base = self.otlp_endpoint.rstrip("/")
        return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def read_tracing(
    table: Mapping[str, Any], env: Mapping[str, str], error: Callable[[str, str], Exception]
) -> TracingSettings:
    """Read `[tracing]` (its keys already checked) and the standard OTEL_* variables;
    `error(key, problem)` is the settings' own error, raised for a bad value."""
    endpoint = table.get("otlp_endpoint")
    if endpoint is not None:
        if not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("http", "https"):
            raise error("tracing.otlp_endpoint", f"must be an http(s):// address, not {endpoint!r}")
        if not urlsplit(endpoint).hostname:
            raise error("tracing.otlp_endpoint", f"has no host: {endpoint!r}")
    capture = table.get("capture_content", False)
    if not isinstance(capture, bool):
        raise error("tracing.capture_content", f"must be true or false, not {capture!r}")
    name = table.get("service_name", "aigne-hub")
    if not isinstance(name, str) or not name:
        raise error("tracing.service_name", f"must be a name, not {name!r}")
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return TracingSettings(
        otlp_endpoint=None if disabled else endpoint,
        capture_content=capture,
        service_name=name,
        from_environment=not disabled and any(env.get(v) for v in ENDPOINT_VARIABLES),
    )
