"""The sinks: what one delivery sends, and what counts as delivered (any 2xx answer).

Each delivery carries an idempotency key that stays the same on every retry: the event's
id (`mev_<ledger id>`, `grant_<ledger id>`) per call, or the id of a summed report, fixed
before its first try. Receivers de-duplicate on it, so at-least-once delivery applies once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import httpx

from hub.outbox import signing
from hub.outbox.config import SinkSettings, webhook_key
from hub.store.outbox import Due
from middleware.money import credits_text

PREFIX = {"meter_event": "mev_", "grant": "grant_"}


class DeliveryError(Exception):
    """A delivery that did not succeed; its message (no secrets) is kept as last_error."""


def event_id(due: Due) -> str:
    """The idempotency key of a delivery."""
    if not due.ledger_id:
        return due.key  # a summed report's own id
    return PREFIX[due.kind] + str(due.ledger_id)


def event_body(due: Due, sink: SinkSettings) -> dict[str, object]:
    """What a webhook receives: the event (or summed report) as JSON."""
    body: dict[str, object] = {
        "id": event_id(due),
        "type": due.kind if sink.mode == "per_call" else f"{due.kind}_summary",
        "account": due.account_did,
        "amount": credits_text(due.amount),
        "units": due.amount,
        "created_at": datetime.fromtimestamp(due.created_at, UTC).isoformat(),
    }
    if sink.mode == "per_call":
        body.update(call_id=due.call_id, model=due.model)
    else:
        start = int(due.created_at) // sink.period_seconds * sink.period_seconds
        body.update(events=due.count, period_start=start, period_seconds=sink.period_seconds)
    return body


class Sink(Protocol):
    settings: SinkSettings

    async def send(self, client: httpx.AsyncClient, due: Due) -> None: ...


class WebhookSink:
    """POSTs each event as JSON, signed as Standard Webhooks are."""

    def __init__(self, settings: SinkSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.key = webhook_key(settings.secret)
        self.clock = clock

    async def send(self, client: httpx.AsyncClient, due: Due) -> None:
        body = json.dumps(event_body(due, self.settings), separators=(",", ":")).encode()
        headers = signing.headers(self.key, event_id(due), int(self.clock()), body)
        headers["content-type"] = "application/json"
        await _post(client, self.settings.url, content=body, headers=headers)


class StripeSink:
    """Stripe billing meter events, the identifier being the event's (or report's) id."""

    def __init__(
        self, settings: SinkSettings, customer: Callable[[int], Awaitable[str | None]]
    ) -> None:
        self.settings = settings
        self.customer = customer

    async def send(self, client: httpx.AsyncClient, due: Due) -> None:
        try:
            customer = await self.customer(due.account_id)
        except Exception as exc:  # a database without migration 16's column
            raise DeliveryError(f"cannot read accounts.stripe_customer_id: {exc}") from exc
        if not customer:
            raise DeliveryError(
                f"account {due.account_did} has no Stripe customer id "
                "(accounts.stripe_customer_id): kept until it has one"
            )
        form = {
            "event_name": self.settings.event_name,
            "identifier": event_id(due),
            "timestamp": str(int(due.created_at)),
            "payload[stripe_customer_id]": customer,
            "payload[value]": credits_text(due.amount),
        }
        headers = {
            "authorization": f"Bearer {self.settings.secret}",
            "idempotency-key": event_id(due),
        }
        url = self.settings.url + "/v1/billing/meter_events"
        await _post(client, url, data=form, headers=headers, said=_stripe_said)


async def _post(
    client: httpx.AsyncClient,
    url: str,
    said: Callable[[httpx.Response], str] = lambda answer: "",
    **request: object,
) -> None:
    try:
        answer = await client.post(url, **request)  # type: ignore[arg-type]
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"timed out ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise DeliveryError(f"could not reach the sink ({type(exc).__name__})") from exc
    if not 200 <= answer.status_code < 300:
        raise DeliveryError(f"HTTP {answer.status_code}{said(answer)}")


def _stripe_said(answer: httpx.Response) -> str:
    """Stripe's error message (it holds no secret); other sinks' bodies are not kept."""
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": {str(message)[:200]}"
