"""Rate limits: requests and tokens per minute and calls at once, per key, account, app
and model. 429 `rate_limited` over a limit; OpenAI's x-ratelimit-* headers on every answer.

Windows are fixed minutes (the limiter's clock: Redis's own when shared), not sliding: a
limit of N admits exactly N calls per window, at the cost of up to 2N across the edge of
two windows. Tokens are reserved at admission from the call's prompt and its max_tokens
(the default output when it sets none), and corrected with the real usage when it ends.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from middleware.call import Call, get_call
from middleware.credit import held_output_tokens, held_prompt_tokens
from middleware.errors import send_error
from middleware.ports import (
    Admission,
    Bucket,
    LimiterUnavailable,
    LimitOverrides,
    Quota,
    RateLimiter,
)

logger = logging.getLogger("aigne_hub.limits")

# A limiter that cannot be reached is said once a minute in the log, not once a call.
UNAVAILABLE_LOG_SECONDS = 60.0
# A call refused for its concurrency has no window to wait for: retry soon.
CONCURRENT_RETRY_SECONDS = 1


@dataclass(frozen=True)
class LimitPolicy:
    """The configured limits: one quota per kind of scope, and per model name."""

    key: Quota = field(default_factory=Quota)
    account: Quota = field(default_factory=Quota)
    app: Quota = field(default_factory=Quota)
    model: Quota = field(default_factory=Quota)
    models: Mapping[str, Quota] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.key or self.account or self.app or self.model or self.models)


def reserved_tokens(call: Call, default_output_tokens: int) -> int:
    """The tokens a call may use at most, reserved from its tokens-per-minute limits: the
    prompt as the credit hold counts it, and the output it asks for (or the default)."""
    if call.call_type != "chatCompletion":
        return held_prompt_tokens(call)
    return held_prompt_tokens(call) + held_output_tokens(call, default_output_tokens)


def duration_text(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def limit_headers(buckets: tuple[Bucket, ...], admission: Admission) -> list[tuple[bytes, bytes]]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens}, for the scope closest to its
    limit of each kind (a caller backs off by the tightest)."""
    headers: list[tuple[bytes, bytes]] = []
    reset = duration_text(admission.reset).encode()
    for kind in ("requests", "tokens"):
        tightest: tuple[int, int] | None = None
        for bucket, count in zip(buckets, admission.counts, strict=True):
            limit = bucket.quota.rpm if kind == "requests" else bucket.quota.tpm
            if limit is None:
                continue
            used = count.requests if kind == "requests" else count.tokens
            remaining = max(0, limit - used)
            if tightest is None or remaining < tightest[1]:
                tightest = (limit, remaining)
        if tightest is not None:
            headers += [
                (b"x-ratelimit-limit-" + kind.encode(), str(tightest[0]).encode()),
                (b"x-ratelimit-remaining-" + kind.encode(), str(tightest[1]).encode()),
                (b"x-ratelimit-reset-" + kind.encode(), reset),
            ]
    return headers


class RateLimitMiddleware:
    """Admits a call only if every scope it belongs to has room, in one step of the
    limiter; gives back its concurrency and corrects its tokens when it ends, whatever
    way it ends. Calls to which no limit applies pass untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        policy: LimitPolicy,
        overrides: LimitOverrides | None = None,
        default_output_tokens: int = 4096,
        fail_open: bool = True,
        on_unavailable: Callable[[], None] | None = None,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.policy = policy
        self.overrides = overrides
        self.default_output_tokens = default_output_tokens
        self.fail_open = fail_open
        self.on_unavailable = on_unavailable
        self.on_refused = on_refused
        self._last_unavailable_log = -math.inf

    async def buckets(self, call: Call) -> tuple[Bucket, ...]:
        """The scopes this call is counted in, each with the quota that applies to it."""
        policy = self.policy
        keys, accounts = await self.overrides.limit_overrides() if self.overrides else ({}, {})
        if not (policy or keys or accounts):
            return ()  # nothing limits anyone: the call passes untouched
        identity = call.identity
        candidates = [
            Bucket(
                f"account:{identity.account_id}",
                policy.account.over(accounts.get(identity.account_id)),
            )
        ]
        if identity.key_id is not None:
            candidates.append(
                Bucket(f"key:{identity.key_id}", policy.key.over(keys.get(identity.key_id)))
            )
        if call.app_did:
            candidates.append(Bucket(f"app:{call.app_did}", policy.app))
        candidates.append(
            Bucket(f"model:{call.model}", policy.model.over(policy.models.get(call.model)))
        )
        return tuple(bucket for bucket in candidates if bucket.quota)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        buckets = await self.buckets(call) if call is not None else ()
        if call is None or not buckets:
            await self.app(scope, receive, send)
            return
        counts_tokens = any(bucket.quota.tpm is not None for bucket in buckets)
        tokens = reserved_tokens(call, self.default_output_tokens) if counts_tokens else 0
        try:
            admission = await self.limiter.admit(call.id, buckets, tokens)
        except LimiterUnavailable as exc:
            await self._unavailable(call, exc, scope, receive, send)
            return
        headers = limit_headers(buckets, admission)
        if not admission.admitted:
            await self._refuse(buckets, admission, tokens, headers, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            # The inner layers have settled the call: its usage is what it really used.
            usage = call.usage
            used = usage.input_tokens + usage.output_tokens if usage is not None else 0
            change = used - tokens if counts_tokens else 0
            self.limiter.release(call.id, buckets, admission.window, change)

    async def _refuse(
        self,
        buckets: tuple[Bucket, ...],
        admission: Admission,
        tokens: int,
        headers: list[tuple[bytes, bytes]],
        send: Send,
    ) -> None:
        bucket = buckets[admission.refused_bucket]
        kind, _, name = bucket.scope.partition(":")
        what = {"key": "this API key", "account": "this account", "app": f"the app {name}"}
        who = what.get(kind, f"the model {name}")
        quota = bucket.quota
        retry = math.ceil(admission.reset)
        if admission.refused_limit == "requests":
            message = f"Rate limit reached for {who}: {quota.rpm} requests per minute."
        elif admission.refused_limit == "tokens":
            message = f"Rate limit reached for {who}: {quota.tpm} tokens per minute."
            if quota.tpm is not None and tokens > quota.tpm:
                message += (
                    f" This request alone may use {tokens} tokens (its prompt and max_tokens):"
                    " lower max_tokens to send it."
                )
        else:
            n = quota.concurrent
            message = f"Rate limit reached for {who}: {n} call{'' if n == 1 else 's'} at once."
            retry = CONCURRENT_RETRY_SECONDS
        if self.on_refused is not None:
            self.on_refused(kind, admission.refused_limit)
        await send_error(
            send,
            429,
            "rate_limited",
            message + f" Retry in {retry} s.",
            headers=[(b"retry-after", str(retry).encode()), *headers],
        )

    async def _unavailable(
        self, call: Call, exc: LimiterUnavailable, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if self.on_unavailable is not None:
            self.on_unavailable()
        now = time.monotonic()
        if now - self._last_unavailable_log >= UNAVAILABLE_LOG_SECONDS:
            self._last_unavailable_log = now
            logger.error(
                "the rate limiter cannot be reached (%s): calls are %s until it is back "
                "(said once a minute; aigne_hub_rate_limiter_errors_total counts them)",
                exc,
                "admitted without limits" if self.fail_open else "refused",
            )
        if self.fail_open:
            await self.app(scope, receive, send)
            return
        await send_error(
            send,
            503,
            "rate_limiter_unavailable",
            "Rate limits cannot be checked right now; retry shortly.",
            headers=[(b"retry-after", str(CONCURRENT_RETRY_SECONDS).encode())],
        )
