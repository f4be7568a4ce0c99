"""`[billing]`: how people pay for credits (read by hub.settings; its own module so the
payment options and their checks sit together)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlsplit

from hub import bounds
from hub.payments.signatures import standard_key
from middleware.errors import HubError

KEYS = {
    "payment_url",
    "welcome_credits",
    "stripe_webhook_secret",
    "credits_per_unit",
    "currency",
    "topup_webhook_secret",
}
# Secrets may come from the environment instead of the file.
STRIPE_SECRET_ENV = "AIGNE_HUB_STRIPE_WEBHOOK_SECRET"
TOPUP_SECRET_ENV = "AIGNE_HUB_TOPUP_WEBHOOK_SECRET"


@dataclass(frozen=True)
class PaymentSettings:
    # Where a person buys credits, shown in every 402; `{did}` is replaced by the account's
    # DID (URL-encoded), e.g. a Stripe Payment Link with `?client_reference_id={did}`.
    payment_url: str | None = None
    # Credits granted once to each account when it is created (units of 10^-10 credit).
    welcome_credits: int = 0
    # Stripe's endpoint secret (`whsec_...`): switches on POST /api/payments/stripe/webhook.
    stripe_webhook_secret: str | None = None
    # Credits per smallest unit of `currency` paid (cents for usd): 0.01 = 1 credit a dollar.
    credits_per_unit: Decimal = Decimal("0.01")
    currency: str = "usd"
    # A Standard Webhooks secret (`whsec_` + base64): switches on POST /api/payments/topup.
    topup_webhook_secret: str | None = None

    def payment_link(self, did: str) -> str | None:
        if self.payment_url is None:
            return None
        return self.payment_url.replace("{did}", quote(did, safe=""))


def read_payments(table: Mapping[str, Any], env: Mapping[str, str], error: Any) -> PaymentSettings:
    """The `[billing]` table checked; `error(key, problem)` makes the ConfigError to raise."""
    url = table.get("payment_url")
    if url is not None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise error("billing.payment_url", "must be an http(s) URL")
    try:
        welcome = bounds.grant_amount(table["welcome_credits"], "welcome_credits")
    except KeyError:
        welcome = 0
    except HubError as exc:
        raise error("billing.welcome_credits", exc.message) from exc
    if welcome < 0:
        raise error("billing.welcome_credits", "must be a positive number of credits")
    per_unit = _per_unit(table.get("credits_per_unit", "0.01"), error)
    currency = table.get("currency", "usd")
    if not isinstance(currency, str) or not (len(currency) == 3 and currency.isalpha()):
        raise error("billing.currency", "must be a three-letter currency code such as usd")
    stripe = env.get(STRIPE_SECRET_ENV) or table.get("stripe_webhook_secret")
    if stripe is not None and (not isinstance(stripe, str) or len(stripe) < 16):
        raise error("billing.stripe_webhook_secret", "must be Stripe's endpoint secret, whsec_...")
    topup = env.get(TOPUP_SECRET_ENV) or table.get("topup_webhook_secret")
    if topup is not None:
        try:
            standard_key(str(topup))
        except ValueError as exc:
            raise error("billing.topup_webhook_secret", str(exc)) from exc
    return PaymentSettings(url, welcome, stripe, per_unit, currency.lower(), topup)


def _per_unit(value: Any, error: Any) -> Decimal:
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidOperation
        per_unit = Decimal(str(value))
    except InvalidOperation:
        per_unit = Decimal("nan")
    if not per_unit.is_finite() or per_unit <= 0 or per_unit > 1_000_000:
        raise error("billing.credits_per_unit", "must be a positive number of credits")
    return per_unit
