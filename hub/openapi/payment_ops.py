"""Payment webhooks, `/api/payments/...` (hub.payments.routes): no key, signed by the payment
service instead; each grants credits once per event id."""

from __future__ import annotations

from hub.openapi.spec import ANY_OBJECT, CREDITS_IN, Operation, obj, string

TAG = "payments"
RECEIVED = obj(
    {
        "received": {"type": "boolean"},
        "granted": {"type": "boolean"},
        "duplicate": {"type": "boolean"},
        "reason": string("Why an event grants nothing."),
    },
    ("received", "granted"),
)
NOT_SET_UP = "404 also when this webhook's secret is not configured, or for an unknown customer."

OPERATIONS = (
    Operation(
        "POST",
        "/api/payments/stripe/webhook",
        "Stripe events: completed checkouts and paid invoices grant credits",
        TAG,
        body=ANY_OBJECT,
        response=RECEIVED,
        errors=(400, 404, 413),
        security="stripe",
        description="Verified by the `Stripe-Signature` header. " + NOT_SET_UP,
    ),
    Operation(
        "POST",
        "/api/payments/topup",
        "A signed top-up from another payment service",
        TAG,
        body=obj(
            {
                "did": string("The account to credit.", maxLength=200),
                "credits": CREDITS_IN,
                "note": string(maxLength=400),
            },
            ("did", "credits"),
        ),
        response=RECEIVED,
        errors=(400, 404, 413),
        security="standard_webhook",
        description=(
            "Signed by the Standard Webhooks scheme: `webhook-id` (the event id, granted "
            "once), `webhook-timestamp` and `webhook-signature` headers. " + NOT_SET_UP
        ),
    ),
)
