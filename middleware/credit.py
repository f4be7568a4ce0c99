"""Refuse calls the caller cannot pay for, before anything is recorded or forwarded."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.call import get_call
from middleware.errors import send_error
from middleware.money import to_credits
from middleware.ports import BalanceReader, RateBook


class CreditCheckMiddleware:
    """402 when the balance is at or below zero; 400 for a model without a rate."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        balances: BalanceReader,
        rates: RateBook,
        enabled: bool = True,
    ) -> None:
        self.app = app
        self.balances = balances
        self.rates = rates
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope) if self.enabled else None
        if call is None:
            await self.app(scope, receive, send)
            return
        if await self.rates.rate(call.model, call.call_type) is None:
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
        balance = await self.balances.balance(call.identity.account_id)
        if balance <= 0:
            await send_error(
                send,
                402,
                "insufficient_credits",
                f"Insufficient credits: the balance is {to_credits(balance)}. "
                "Buy or request more credits to continue.",
            )
            return
        await self.app(scope, receive, send)
