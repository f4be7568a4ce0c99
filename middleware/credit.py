"""Refuse calls the caller cannot pay for, before anything is recorded or forwarded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.billing import price
from middleware.call import Call, Usage, get_call
from middleware.errors import send_error, send_store_unavailable
from middleware.money import credits_text
from middleware.ports import BudgetExceeded, InsufficientCredit, Rate, RateBook
from middleware.tokens import prompt_tokens

logger = logging.getLogger("aigne_hub.credit")

# JSON-encoded text averages over three bytes per token; four errs on the generous side for
# the caller while still counting every message.
BYTES_PER_TOKEN = 4
# No model writes more than this in one answer; larger max_tokens values are held at it.
MAX_HELD_OUTPUT_TOKENS = 10_000_000
MAX_HELD_IMAGES = 100
# Bytes that may stand for more tokens than their length: content parts that are not text,
# and JSON escapes (which could spell either those or non-Latin text).
_COSTLY_PARTS = (b'"image_url"', b'"input_audio"', b'"file"', b"\\u")


def held_prompt_tokens(call: Call) -> int:
    """The prompt's tokens, from above: its bytes, or what its images, files, audio and
    non-Latin text count for, if more. A remote image is a few bytes of URL but over a
    thousand tokens; the counting walks the body only for such bodies.

    Counted once a call and kept on it (`prompt_estimate`): the rate limits reserve it,
    the hold prices it, and the record carries it for the charge of a call whose hub dies."""
    if call.prompt_estimate is None:
        raw = call.raw_body
        by_bytes = len(raw) // BYTES_PER_TOKEN + 1
        if raw.isascii() and not any(marker in raw for marker in _COSTLY_PARTS):
            call.prompt_estimate = by_bytes
        else:
            call.prompt_estimate = max(by_bytes, prompt_tokens(call.body))
    return call.prompt_estimate


def held_output_tokens(call: Call, default_output_tokens: int) -> int:
    """The output a chat call may produce at most: what it asks for (capped), else the
    default; for the hold and the tokens-per-minute reservation alike."""
    output = call.body.get("max_completion_tokens", call.body.get("max_tokens"))
    if isinstance(output, int) and not isinstance(output, bool) and output > 0:
        return min(output, MAX_HELD_OUTPUT_TOKENS)
    return default_output_tokens


def worst_case(call: Call, rate: Rate, default_output_tokens: int) -> int:
    """What the call may cost at most, for holding credit while it runs."""
    input_tokens = held_prompt_tokens(call)
    if call.call_type == "imageGeneration":
        n = call.body.get("n", 1)
        images = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
        images = min(images, MAX_HELD_IMAGES)
        return price(Usage(input_tokens=input_tokens, images=images), rate)
    output_tokens = (
        0 if call.call_type == "embedding" else held_output_tokens(call, default_output_tokens)
    )
    # The prompt may all be written to a cache, at a rate above the input rate.
    written = input_tokens if (rate.cache_write_rate or 0) > rate.input_rate else 0
    usage = Usage(input_tokens, output_tokens, cache_write_tokens=written)
    return price(usage, rate)


PAYMENT_URL_HEADER = b"x-aigne-hub-payment-url"


class CreditCheckMiddleware:
    """402 when the balance, less what calls in flight may still cost, is at or below zero.

    Each admitted call holds its worst-case cost while it runs, so a burst of concurrent
    calls cannot all pass on a balance that covers one: the overdraft is bounded by what
    the admitted calls really cost beyond their holds. This layer finds the rate (unpriced
    models are refused) and the hold, and puts both on the Call; the admission itself is
    made where the call is recorded (`CallLog.open_call`, run by ModelCallMiddleware
    inside this one), so recording the call, holding its credit and checking the balance
    are one atomic step of the store, exact across every process and instance that shares
    it. The settle, which charges the call, releases the hold.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rates: RateBook,
        enabled: bool = True,
        holds: bool = True,
        default_output_tokens: int = 4096,
        payment_link: Callable[[str], str | None] | None = None,
    ) -> None:
        self.app = app
        # The operator's payment page for an account's DID, shown when it runs out.
        self.payment_link = payment_link
        self.rates = rates
        self.enabled = enabled
        self.holds = holds
        self.default_output_tokens = default_output_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope) if self.enabled else None
        if call is None:
            await self.app(scope, receive, send)
            return
        # The one lookup of the call's rate: billing and the answers that show credits
        # price with the rate put on the Call here. A name given without a provider
        # (`gpt-4o-mini`) is priced as such, whichever provider serves it: a per-provider
        # rate would let failover land on an unpriced provider.
        try:
            rate = await self.rates.rate(call.model, call.call_type)
        except Exception as exc:
            logger.error("the rate of call %s could not be read: %r", call.id, exc)
            await send_store_unavailable(send, "read this model's rate")
            return
        if rate is None:
            # An unpriced model would be a free call: refuse it rather than give it away.
            await send_error(
                send,
                400,
                "model_not_priced",
                f"The model '{call.model}' has no {call.call_type} rate on this hub yet; "
                "ask the operator to set one.",
                "model",
            )
            return
        call.rate = rate
        call.hold = worst_case(call, rate, self.default_output_tokens) if self.holds else 0
        try:
            await self.app(scope, receive, send)
        except InsufficientCredit as refused:
            # Raised by the admission, before anything was recorded, held or sent.
            link = self.payment_link(call.identity.user_did) if self.payment_link else None
            # The link goes in the message (every client format shows it) and in a header
            # (for programs); it names the account so the payment is granted to it.
            headers = [(PAYMENT_URL_HEADER, link.encode())] if link else None
            message = _refusal(refused, link)
            await send_error(send, 402, "insufficient_credits", message, headers=headers)
        except BudgetExceeded as capped:
            await send_error(
                send, 402, "budget_exceeded", budget_refusal(capped), headers=_reset(capped)
            )


def _refusal(refused: InsufficientCredit, link: str | None) -> str:
    held = (
        f", of which {credits_text(refused.held)} is held by calls in flight"
        if refused.held > 0
        else ""
    )
    more = f"Buy credits at {link}" if link else "Buy or request more credits"
    return (
        f"Insufficient credits: the balance is {credits_text(refused.balance)}{held}. "
        f"{more} to continue."
    )


# The header that says when a cap refusing a call is whole again (as the message does).
BUDGET_RESET_HEADER = "x-budget-reset"


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def budget_refusal(capped: BudgetExceeded) -> str:
    """What a refusal by a spend cap says: whose cap, how much per what, and when it resets."""
    per = "in all" if capped.period == "life" else f"per {capped.period} (UTC)"
    held = f", {credits_text(capped.held)} held by calls in flight" if capped.held > 0 else ""
    resets = (
        f"It resets at {iso_time(capped.resets_at)}."
        if capped.resets_at is not None
        else "It never resets: ask the operator to raise it."
    )
    return (
        f"Budget exceeded: the {capped.scope}'s budget of {credits_text(capped.budget)} "
        f"credits {per} is used up ({credits_text(capped.spent)} spent{held}). {resets}"
    )


def _reset(capped: BudgetExceeded) -> list[tuple[bytes, bytes]] | None:
    if capped.resets_at is None:
        return None
    return [(BUDGET_RESET_HEADER.encode(), iso_time(capped.resets_at).encode())]
