"""Refuse calls the caller cannot pay for, before anything is recorded or forwarded."""

from __future__ import annotations

from collections import defaultdict

from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.billing import price, rate_of
from middleware.call import Call, Usage, get_call
from middleware.errors import send_error
from middleware.money import credits_text
from middleware.ports import BalanceReader, Rate, RateBook
from middleware.tokens import prompt_tokens

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
    thousand tokens; the counting walks the body only for such bodies."""
    raw = call.raw_body
    by_bytes = len(raw) // BYTES_PER_TOKEN + 1
    if raw.isascii() and not any(marker in raw for marker in _COSTLY_PARTS):
        return by_bytes
    return max(by_bytes, prompt_tokens(call.body))


def worst_case(call: Call, rate: Rate, default_output_tokens: int) -> int:
    """What the call may cost at most, for holding credit while it runs."""
    body = call.body
    # Kept on the call: the record carries it, for the charge of a call whose hub dies.
    input_tokens = call.prompt_estimate = held_prompt_tokens(call)
    if call.call_type == "imageGeneration":
        n = body.get("n", 1)
        images = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
        images = min(images, MAX_HELD_IMAGES)
        return price(Usage(input_tokens=input_tokens, images=images), rate)
    output = body.get("max_completion_tokens", body.get("max_tokens"))
    if call.call_type == "embedding":
        output_tokens = 0
    elif isinstance(output, int) and not isinstance(output, bool) and output > 0:
        output_tokens = min(output, MAX_HELD_OUTPUT_TOKENS)
    else:
        output_tokens = default_output_tokens
    # The prompt may all be written to a cache, at a rate above the input rate.
    written = input_tokens if (rate.cache_write_rate or 0) > rate.input_rate else 0
    usage = Usage(input_tokens, output_tokens, cache_write_tokens=written)
    return price(usage, rate)


class CreditCheckMiddleware:
    """402 when the balance, less what calls in flight may still cost, is at or below zero.

    Each admitted call holds its worst-case cost while it runs, so a burst of concurrent
    calls cannot all pass on a balance that covers one: the overdraft is bounded by what
    the admitted calls really cost beyond their holds. Once billing has priced a call, it
    holds its real charge instead, until the settle has moved the balance. Holds live in
    this process; the balance comes from the shared store. Unpriced models are refused.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        balances: BalanceReader,
        rates: RateBook,
        enabled: bool = True,
        holds: bool = True,
        default_output_tokens: int = 4096,
    ) -> None:
        self.app = app
        self.balances = balances
        self.rates = rates
        self.enabled = enabled
        self.holds = holds
        self.default_output_tokens = default_output_tokens
        # Shared by all requests on purpose: each account's calls in flight, with their holds,
        # and the sum of those holds (an upper bound of what is held, kept up to date).
        self.in_flight: defaultdict[int, dict[str, tuple[Call, int]]] = defaultdict(dict)
        self.hold_totals: defaultdict[int, int] = defaultdict(int)

    def held(self, account_id: int) -> int:
        """Credit held by the account's calls in flight: real charges once they are priced."""
        calls = self.in_flight.get(account_id)
        if not calls:
            return 0
        return sum(hold if call.charge is None else call.charge for call, hold in calls.values())

    def _available(self, account_id: int, balance: int) -> int:
        # Summing every call in flight is only needed when the holds could use up the
        # balance; otherwise the cheap upper bound already proves there is credit left.
        if balance - self.hold_totals.get(account_id, 0) > 0:
            return balance - self.hold_totals.get(account_id, 0)
        return balance - self.held(account_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope) if self.enabled else None
        if call is None:
            await self.app(scope, receive, send)
            return
        rate = await rate_of(self.rates, call)
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
        account = call.identity.account_id
        balance = await self.balances.balance(account)
        available = self._available(account, balance)
        if available <= 0:
            # Before refusing, look past the cache: credit granted a moment ago (by the CLI
            # or another instance) must count at once.
            balance = await self.balances.balance(account, fresh=True)
            available = self._available(account, balance)
        if available <= 0:
            await send_error(
                send,
                402,
                "insufficient_credits",
                f"Insufficient credits: the balance is {credits_text(balance)}"
                + (
                    f", of which {credits_text(balance - available)} is held by calls in flight"
                    if available != balance
                    else ""
                )
                + ". Buy or request more credits to continue.",
            )
            return
        hold = worst_case(call, rate, self.default_output_tokens) if self.holds else 0
        calls = self.in_flight[account]
        calls[call.id] = (call, hold)
        self.hold_totals[account] += hold
        try:
            await self.app(scope, receive, send)
        finally:
            # The inner layers have settled the call by now, so the balance reflects it.
            del calls[call.id]
            self.hold_totals[account] -= hold
            if not calls:
                del self.in_flight[account]
                del self.hold_totals[account]
