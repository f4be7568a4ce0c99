"""Which Stripe events pay for credits, for whom, and how many.

Granted:
- `checkout.session.completed` (and `checkout.session.async_payment_succeeded`, for
  payment methods that settle later) of a one-off payment (`mode: payment`) whose
  `payment_status` is `paid`. The account is the session's `client_reference_id` (a Payment
  Link passes it through from its URL, which is how `billing.payment_url` names the DID) or
  its `metadata.did`.
- `invoice.paid` with an amount paid: subscriptions and invoices. The account is the
  invoice's `metadata.did`, its subscription's metadata `did`, or the account whose Stripe
  customer id is the invoice's `customer` (learned from an earlier checkout).
Subscription checkouts are left to their invoices, so a first payment is not granted twice.

The credits are `metadata.credits` of the session or invoice when set (so a price can sell a
bundle), else the amount paid in the smallest currency unit times `billing.credits_per_unit`,
in the configured currency only. Everything else is acknowledged and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hub import bounds
from middleware.errors import HubError

CHECKOUT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
INVOICE_PAID = "invoice.paid"


@dataclass(frozen=True)
class Payment:
    """A paid Stripe event, read: who paid (a DID, or only a Stripe customer) and for how much."""

    event_id: str
    did: str | None
    customer: str | None
    units: int
    note: str


@dataclass(frozen=True)
class Ignored:
    """An event that grants nothing, and why (logged, answered 200 so Stripe stops sending it)."""

    reason: str


def read_event(event: Any, *, credits_per_unit: Decimal, currency: str) -> Payment | Ignored:
    """The payment an event stands for; HubError 400 for an event that is not Stripe's shape."""
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise HubError(400, "invalid_event", "The body is not a Stripe event (no id).")
    kind = event.get("type")
    data = event.get("data")
    paid = data.get("object") if isinstance(data, dict) else None
    if not isinstance(paid, dict):
        raise HubError(400, "invalid_event", "The event has no data.object.")
    event_id = bounds.fits(event["id"], "id", 255)
    if kind in CHECKOUT_EVENTS:
        if paid.get("mode") != "payment":
            return Ignored(f"{kind} in mode {paid.get('mode')!r}: its invoices grant")
        if paid.get("payment_status") != "paid":
            return Ignored(f"{kind} not paid yet ({paid.get('payment_status')!r})")
        did = _text(paid.get("client_reference_id")) or _metadata(paid, "did")
        amount = paid.get("amount_total")
    elif kind == INVOICE_PAID:
        parent = paid.get("parent")
        subscription = (
            parent.get("subscription_details") if isinstance(parent, dict) else None
        ) or (paid.get("subscription_details"))
        did = _metadata(paid, "did") or _metadata(subscription, "did")
        amount = paid.get("amount_paid")
    else:
        return Ignored(f"event type {kind!r} grants nothing")
    units = _credits(paid, amount, credits_per_unit, currency)
    if isinstance(units, Ignored):
        return units
    customer = _text(paid.get("customer"))
    if did is None and customer is None:
        return Ignored(f"{kind} {paid.get('id')!r} names no account and no customer")
    note = f"stripe {kind} {paid.get('id')}"[:500]
    return Payment(event_id, did, customer, units, note)


def _credits(paid: dict[str, Any], amount: Any, per_unit: Decimal, currency: str) -> int | Ignored:
    bundle = _metadata(paid, "credits")
    if bundle is not None:
        return bounds.grant_amount(bundle, "metadata.credits")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        return Ignored(f"nothing was paid (amount {amount!r})")
    if str(paid.get("currency", "")).lower() != currency:
        return Ignored(f"paid in {paid.get('currency')!r}, not in {currency!r}")
    return bounds.grant_amount(Decimal(amount) * per_unit, "amount")


def _metadata(holder: Any, name: str) -> str | None:
    metadata = holder.get("metadata") if isinstance(holder, dict) else None
    return _text(metadata.get(name)) if isinstance(metadata, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None
