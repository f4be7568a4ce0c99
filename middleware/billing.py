"""Price the usage of a finished call with its model's rate, exactly."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from middleware.call import Call, Usage, get_call
from middleware.ports import Rate, RateBook

logger = logging.getLogger("aigne_hub.billing")


async def rate_of(rates: RateBook, call: Call) -> Rate | None:
    """The call's rate: that of the model as the client named it.

    A name given without a provider (`gpt-4o-mini`) is priced as such, whichever provider
    serves it: a per-provider rate would let failover land on an unpriced provider.
    """
    return await rates.rate(call.model, call.call_type)


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


class BillingMiddleware:
    """Sets `call.charge` as the answer ends: priced before its last message goes out, so
    the ModelCall layer (outside this one) can settle the charge before the client has the
    whole answer; calls that end otherwise (hang-ups, errors) are priced when the app
    returns."""

    def __init__(self, app: ASGIApp, *, rates: RateBook, enabled: bool = True) -> None:
        self.app = app
        self.rates = rates
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        if call is None:
            await self.app(scope, receive, send)
            return

        async def price_at_end(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                await self._charge(call)
            await send(message)

        try:
            await self.app(scope, receive, price_at_end)
        finally:
            if not call.answered:
                await self._charge(call)

    async def _charge(self, call: Call) -> None:
        if not self.enabled or call.usage is None:
            call.charge = 0
            return
        # The credit check's rate (one lookup a call); looked up here only without one.
        rate = call.rate or await rate_of(self.rates, call)
        if rate is None:
            # The credit check refused unpriced models, so the rate was removed mid-call:
            # the answer was delivered, so the record stays a success, at no charge.
            logger.warning("no rate for %s when call %s ended; charged 0", call.model, call.id)
            call.charge = 0
            return
        call.charge = price(call.usage, rate)
