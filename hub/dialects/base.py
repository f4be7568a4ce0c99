"""The contract every client format implements: N providers + M formats, not N x M.

The hub works in one normalized shape: an OpenAI chat completions request body (what the
provider adapters in hub.providers read), OpenAI completion bodies for whole answers, and
OpenAI `chat.completion.chunk` objects for streams (what adapters' stream translators
yield). A client format reads its requests into that shape and renders the normalized
answer, stream, usage and errors back in its own wire format.

Adding a format (Anthropic Messages, say) is one module in hub/dialects/ holding an object
that satisfies `ClientFormat`, plus its routes in hub/routes.py MODEL_ROUTES:

    "/v1/messages": Route("chatCompletion", ANTHROPIC_MESSAGES),
    "/v1beta/models/{model}:streamGenerateContent": Route("chatCompletion", GEMINI, stream=True),

(a `{model}` path part fills the call's model, slashes allowed; see middleware.routing).
Auth, limits, the credit hold, the call record and billing then work unchanged, and every
layer's errors (401, 402, 403, 429 with its Retry-After, 400, 413, 404, 502...) come out
through the format's `error_body`.

Pass-through. When the provider the call is routed to speaks the client's own format
(`native_kind == provider.kind`), nothing is translated: the provider adapter builds its
upstream request from the client's raw body (`call.raw_body`) with only the model replaced
by `call.upstream_model` (it knows to because `call.dialect` is this format's `name`; see
OpenAIProvider.build_request), and the answer goes back byte for byte: `native_answer`
reads a whole answer's usage, `native_stream` relays the provider's SSE events untouched
while tapping usage (for Anthropic: message_start and message_delta) and delivered chunks,
and rewrites the provider's error events with the provider's keys scrubbed. Otherwise the
provider's answer is normalized by its adapter and rendered with `answer` / `stream`.

Refusal (optional). A format whose requests carry what only its native provider can honour
(Anthropic's own tools, say) may define `refusal(call, kind) -> HubError | None`: the proxy
asks it for each provider kind the call may go to, before anything is sent, and answers
the error (400 `unsupported_parameter` naming the field) rather than translate with a loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from middleware.call import Call, CallType, Usage


class StreamRender(Protocol):
    """Writes normalized chunks of one call's stream in the client's format (one per call,
    so it may keep state: open content blocks, a sequence number...)."""

    def chunks(self, chunks: list[dict[str, Any]]) -> bytes:
        """SSE bytes for OpenAI chunk objects (may be empty; a chunk with no `choices` and a
        `usage` is the provider's usage report; `call.usage` is already updated from it)."""
        ...

    def error(self, code: str, message: str) -> bytes:
        """An error event mid-stream (the status line has gone out): the client's SDK
        should raise on it. `code` is the hub's stable code, e.g. upstream_error."""
        ...

    def close(self, credits: int) -> bytes:
        """The stream's proper end after the last chunk (OpenAI: `data: [DONE]`; Anthropic:
        message_delta with usage, message_stop). `call.usage` is final (reported or
        estimated); `credits` is the call's price when `shows_credits`, else 0."""
        ...


class Relay(Protocol):
    """Turns upstream stream events into what the client's format expects (the proxy's
    stream loop feeds it; `native_stream` returns one for pass-through)."""

    @property
    def complete(self) -> bool:
        """The upstream said its answer was over ([DONE], a stop reason): usage it reported
        is final. Usage reported before that (Anthropic's message_start) may be partial."""
        ...

    def relay(self, events: list[bytes]) -> bytes:
        """Bytes for whole upstream SSE events (each ends with a blank line). Sets
        `call.usage` from usage events, counts `call.delivered_chunks` (and, for the
        stopped-stream estimate, delivered_chars or delivered_bytes), and on an upstream
        error event calls `call.fail("upstream_error", scrubbed_message)`."""
        ...

    def flush(self, tail: bytes) -> bytes:
        """Whatever the upstream left unterminated, at a normal end."""
        ...

    def close(self, error: tuple[str, str] | None, credits: int) -> bytes:
        """The stream's last bytes: `error` (code, message) in the client's format when the
        upstream broke off, or its proper end."""
        ...


class ClientFormat(Protocol):
    """One client wire format. Implementations are stateless singletons (per-call state
    lives in the StreamRender / Relay they create)."""

    # Recorded as the call's dialect and shown in the calls table:
    # "openai", "aigne", "anthropic", "responses", "gemini".
    name: str
    # The provider kind (hub.providers: "openai", "anthropic", "gemini") that speaks this
    # format natively, for pass-through; None if none does.
    native_kind: str | None
    # Whether answers show the call's credits (AIGNE's do): the proxy then prices the call
    # before rendering the end of the answer.
    shows_credits: bool

    def normalize(self, body: dict[str, Any], call_type: CallType) -> dict[str, Any]:
        """The client's parsed JSON body as the normalized OpenAI request for `call_type`
        ("chatCompletion", "embedding", "imageGeneration"): `model` (a pattern route's path
        model overrides it), `messages`, `stream`, `max_tokens`, `tools`... Raise
        ValueError/TypeError/KeyError with a message (answered 400 invalid_request) or
        middleware.errors.HubError for a precise status and code (400
        unsupported_parameter naming the field). Must not mutate `body`."""
        ...

    def error_body(self, status: int, code: str, message: str, param: str | None) -> bytes:
        """A whole error response body (JSON) in this format, for any layer's error.
        `code` is the hub's stable code (missing_api_key, insufficient_credits,
        rate_limited, unknown_model...); keep it readable in the body."""
        ...

    def answer(self, call: Call, completion: bytes, credits: int) -> bytes:
        """A whole answer: `completion` is the normalized OpenAI response body (a chat
        completion, or an embeddings / images response for those call types), `call.usage`
        is set, `credits` as for StreamRender.close. Returns the response body (JSON)."""
        ...

    def stream(self, call: Call) -> StreamRender:
        """The renderer for one streamed call whose upstream is not native."""
        ...

    def native_answer(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        """Pass-through of a whole answer from a `native_kind` provider: the body to send
        (normally `body` itself) and the usage read from it (None: the proxy estimates)."""
        ...

    def native_stream(self, call: Call, scrub: Callable[[str], str]) -> Relay:
        """Pass-through of a stream from a `native_kind` provider: events go out as they
        came, tapped (see Relay). `scrub` removes provider keys from error messages."""
        ...


def speaks_natively(fmt: ClientFormat, provider: Any) -> bool:
    """Whether `provider` (a hub.providers Adapter) speaks the client's format, so bytes
    pass through: its kind is the format's native kind, and, for an adapter that lists the
    formats it serves (`native_formats`), the format is among them. Not every OpenAI-kind
    server serves the Responses API (DeepSeek, Groq and Ollama serve chat only)."""
    if fmt.native_kind != provider.kind:
        return False
    served = getattr(provider, "native_formats", None)
    return served is None or fmt.name in served
