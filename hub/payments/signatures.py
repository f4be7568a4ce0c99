"""Checking that a webhook was sent by who holds the shared secret, and recently.

Two schemes: Stripe's `Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`
(several v1 entries while a secret is being rolled), and Standard Webhooks'
`webhook-id` / `webhook-timestamp` / `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">` with a `whsec_<base64>` secret. A timestamp older or newer than the
tolerance is refused, so a captured delivery cannot be replayed later; every comparison is
constant-time, so the signature cannot be guessed byte by byte from response times.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

# Stripe's libraries and the Standard Webhooks spec both default to five minutes.
TOLERANCE_SECONDS = 300


class BadSignature(ValueError):
    """The delivery is not signed by the secret, or not recently: its message says which
    (never the secret or the expected signature)."""


def verify_stripe(header: str | None, body: bytes, secret: str, now: float) -> None:
    """Raise BadSignature unless `header` signs `body` with `secret` within the tolerance."""
    if not header:
        raise BadSignature("missing Stripe-Signature header")
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise BadSignature("Stripe-Signature has no timestamp or no v1 signature")
    sent = _timestamp(timestamp, now)
    signed = f"{sent}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise BadSignature("no signature matches the webhook secret")


def verify_standard(
    message_id: str | None,
    timestamp: str | None,
    header: str | None,
    body: bytes,
    secret: str,
    now: float,
) -> None:
    """Raise BadSignature unless the Standard Webhooks headers sign `body` with `secret`."""
    if not message_id or not timestamp or not header:
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    sent = _timestamp(timestamp, now)
    signed = f"{message_id}.{sent}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    # Space-separated "version,signature" pairs; only v1 (HMAC-SHA256) is defined.
    given = [
        value for version, _, value in (p.partition(",") for p in header.split()) if version == "v1"
    ]
    if not any(hmac.compare_digest(expected, g) for g in given):
        raise BadSignature("no signature matches the webhook secret")


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` then base64); ValueError if bad."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError("must be 'whsec_' followed by base64") from exc
    if len(key) < 16:
        raise ValueError("must hold at least 16 bytes of key")
    return key


def _timestamp(text: str, now: float) -> int:
    if not text.isdigit() or len(text) > 12:
        raise BadSignature("the signature's timestamp is not a Unix time")
    sent = int(text)
    if abs(now - sent) > TOLERANCE_SECONDS:
        raise BadSignature(f"the signature's timestamp is more than {TOLERANCE_SECONDS} s off")
    return sent
