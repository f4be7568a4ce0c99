"""The Call: one object per model request, carried in the ASGI scope."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from starlette.types import Scope

if TYPE_CHECKING:
    from middleware.ports import Rate
    from middleware.scopes import ModelScope

CallType = Literal["chatCompletion", "embedding", "imageGeneration"]
CallStatus = Literal["processing", "success", "failed"]

CALL_KEY = "hub.call"
IDENTITY_KEY = "hub.identity"


def new_call_id() -> str:
    """32 hex digits: the time in milliseconds, then 80 random bits (UUIDv7's layout).

    Time first, so new calls land at the end of the primary-key index instead of on a
    random page of it, which kept inserts slowing as the table grew. Ids must be unique,
    not secret: the seeded PRNG (re-seeded in forked workers) is cheaper than a system
    call for fresh entropy.
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


@dataclass(slots=True)
class Identity:
    """Who is calling: set by the auth middleware."""

    account_id: int
    user_did: str
    key_id: str | None = None
    app_did: str | None = None
    is_admin: bool = False
    via: Literal["api_key", "session"] = "api_key"
    # The models the key may call (the Call middleware refuses others); None: every model.
    models: ModelScope | None = None
    # The key has a spend cap (as of the cached key record): the admission checks it.
    budgeted: bool = False


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    images: int = 0
    # Prompt tokens written to the provider's cache (Anthropic charges them above the input
    # rate); like cached_tokens, part of input_tokens.
    cache_write_tokens: int = 0


@dataclass(slots=True)
class Call:
    """What the stack knows about one model request; each layer adds its part."""

    identity: Identity
    call_type: CallType
    model: str
    body: dict[str, Any]
    raw_body: bytes
    stream: bool = False
    # The wire format the client speaks ("openai", "aigne"); answers are rendered in it.
    dialect: str = "openai"
    # The client format object itself (middleware.routing.WireFormat; the proxy reads it as
    # hub.dialects.base.ClientFormat to render answers); None for a route given no format.
    format: Any = None
    # Headers of the client's that the provider speaking its format natively needs
    # (Anthropic's anthropic-version and anthropic-beta): named by the format, read once.
    passed_headers: dict[str, str] = field(default_factory=dict)
    app_did: str | None = None
    request_id: str = ""
    id: str = field(default_factory=lambda: new_call_id())
    provider: str | None = None
    upstream_model: str | None = None
    started_at: float = field(default_factory=time.time)
    started_clock: float = field(default_factory=time.perf_counter)
    first_byte_clock: float | None = None
    ended_clock: float | None = None
    usage: Usage | None = None
    status: CallStatus = "processing"
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    client_gone: bool = False
    # The request was handed to a provider's connection: from then on the provider may bill
    # the prompt, so the call is charged at least for it, even if the client hangs up.
    sent_upstream: bool = False
    # The whole answer has been handed to the server (its last body message).
    answered: bool = False
    # Stream chunks that carried content or tool-call deltas to the client: about one token
    # each, for estimating the output of a stream that ended without reported usage.
    delivered_chunks: int = 0
    # Text delivered in those chunks, in characters: counted exactly where the hub reads
    # the chunks, estimated from their sizes where it passes them through untouched.
    delivered_chars: int = 0
    delivered_bytes: int = 0
    smallest_chunk: int = 0
    # True when `usage` was estimated by the hub rather than reported by the provider.
    usage_estimated: bool = False
    # Upstream attempts made (credentials tried), and the credential (masked) that answered.
    attempts: int = 0
    credential: str | None = None
    # Credits in integer units of 10**-10 (see middleware.money); None until priced.
    charge: int | None = None
    # The prompt's tokens as the credit check counted them for its hold: what the call is
    # charged if the hub process serving it dies before settling it (hub.store.instances).
    prompt_estimate: int | None = None
    # The model's rate, looked up once by the credit check; billing prices with it.
    rate: Rate | None = None
    # The credit held while the call runs (its worst-case cost), set by the credit check;
    # None when credit is not checked (billing is off).
    hold: int | None = None

    def fail(self, code: str, message: str) -> None:
        """Record why the call failed; the first reason wins."""
        if self.error_code is None:
            self.error_code = code
            self.error_message = message[:1000]

    @property
    def duration_ms(self) -> int:
        end = self.ended_clock if self.ended_clock is not None else time.perf_counter()
        return int((end - self.started_clock) * 1000)

    @property
    def ttfb_ms(self) -> int | None:
        if self.first_byte_clock is None:
            return None
        return int((self.first_byte_clock - self.started_clock) * 1000)


def get_call(scope: Scope) -> Call | None:
    """The Call of this request, if an outer middleware made one."""
    call = scope.get(CALL_KEY)
    return call if isinstance(call, Call) else None


def get_identity(scope: Scope) -> Identity | None:
    """The authenticated identity of this request, if any."""
    ident = scope.get(IDENTITY_KEY)
    return ident if isinstance(ident, Identity) else None
