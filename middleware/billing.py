"""Price the usage of a finished call with its model's rate, exactly."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from middleware.call import Call, Usage, get_call
from middleware.ports import Rate

logger = logging.getLogger("aigne_hub.billing")


def price(usage: Usage, rate: Rate) -> int:
    """The charge in integer units for this usage at this rate.

    `input_tokens` counts the whole prompt, cache reads and writes included (as OpenAI
    reports it); reads are charged at the cached rate and writes at the cache-write rate,
    each falling back to the input rate.
    """
    if rate.call_type == "imageGeneration":
        per_image = rate.image_rate if rate.image_rate is not None else rate.output_rate
        return usage.images * per_image + usage.input_tokens * rate.input_rate
    cached = min(usage.cached_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    cached_rate = rate.cached_rate if rate.cached_rate is not None else rate.input_rate
    write_rate = rate.cache_write_rate if rate.cache_write_rate is not None else rate.input_rate
    return (
        (usage.input_tokens - cached - written) * rate.input_rate
        + cached * cached_rate
        + written * write_rate
        + usage.output_tokens * rate.output_rate
    )


def charge_of(call: Call) -> int:
    """What the call costs: its usage at the rate the credit check put on it (the one
    lookup of a call); 0 while it has no usage, or no rate (credit is not checked)."""
    if call.usage is None or call.rate is None:
        return 0
    return price(call.usage, call.rate)


class BillingMiddleware:
    """Sets `call.charge` as the answer ends: priced before its last message goes out, so
    the ModelCall layer (outside this one) can settle the charge before the client has the
    whole answer; calls that end otherwise (hang-ups, errors) are priced when the app
    returns.

    It prices with the rate CreditCheckMiddleware (outside) found and put on the Call, and
    looks up nothing itself: a call is priced at the rate it was admitted at, even if the
    rate changes while it runs. Mount the credit check with it; with billing off, neither.
    """

    def __init__(self, app: ASGIApp, *, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        if call is None:
            await self.app(scope, receive, send)
            return

        async def price_at_end(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._charge(call)
            await send(message)

        try:
            await self.app(scope, receive, price_at_end)
        finally:
            if not call.answered:
                self._charge(call)

    def _charge(self, call: Call) -> None:
        if self.enabled and call.rate is None and call.usage is not None:
            # No credit check in front found the rate: the call goes free, and says so.
            logger.warning("call %s has no rate (is credit checked?); charged 0", call.id)
        call.charge = charge_of(call) if self.enabled else 0
