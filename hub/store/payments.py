"""Payments in the store: a paid event becomes a credit grant once, whatever the retries.

The event row, the grant and the balance are written in one transaction, and the event's
(source, id) is unique: a delivery seen before grants nothing, and two deliveries of one
event racing on two processes cannot both commit (the second fails on the unique index and
is then answered as a duplicate).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select

from hub import bounds
from hub.payments.stripe_events import Payment
from hub.store.ledger import Ledger
from hub.store.raw import Exec, Fetch, Operation, Prepared
from hub.store.schema import accounts, payment_events
from hub.store.sql import SqlStore
from hub.store.statements import param

Outcome = Literal["granted", "duplicate", "unknown_customer"]


@dataclass(frozen=True)
class Recorded:
    status: Outcome
    did: str | None = None
    balance: int | None = None


class Payments(Ledger):
    """Records payments from the payment webhooks (hub.payments.routes)."""

    def __init__(self, store: SqlStore) -> None:
        super().__init__(store)

        def prep(statement: object) -> Prepared:
            return Prepared(statement, store.dialect)  # type: ignore[arg-type]

        e, a = payment_events.c, accounts.c
        self._seen = prep(
            select(e.id).where(e.source == param("source"), e.event_id == param("event"))
        )
        self._by_customer = prep(
            select(a.id, a.did).where(a.stripe_customer_id == param("customer"))
        )
        self._did_of = prep(select(a.did).where(a.id == param("id")))
        self._link_customer = prep(
            accounts.update()
            .where(a.id == param("id"), a.stripe_customer_id.is_(None))
            .values(stripe_customer_id=param("customer"))
        )
        self._insert = prep(
            payment_events.insert().values(
                source=param("source"),
                event_id=param("event"),
                account_id=param("id"),
                amount=param("amount"),
                created_at=param("now"),
            )
        )

    async def record(self, source: str, payment: Payment) -> Recorded:
        """Grant the payment's credits unless this event was granted before."""
        bounds.check_grant(payment.units)
        try:
            recorded = await self.store.run(lambda: self._record(source, payment))
        except Exception as exc:
            if payment.did is not None:
                await self.refuse_past_bounds(exc, payment.did, payment.units)
            if not _unique_violation(exc):
                raise
            # The same event, granted by another process between our check and our insert.
            return Recorded("duplicate")
        if recorded.status == "granted":
            self.store.forget_caches()  # this process's cached balance is now stale
        return recorded

    def _record(self, source: str, payment: Payment) -> Operation[Recorded]:
        seen = yield Fetch(self._seen, {"p_source": source, "p_event": payment.event_id})
        if seen is not None:
            return Recorded("duplicate")
        if payment.did is not None:
            account_id = yield from self._account_id(payment.did)
            did: str = payment.did
            if payment.customer is not None:
                yield Exec(
                    self._link_customer, {"p_id": account_id, "p_customer": payment.customer}
                )
        else:
            row = yield Fetch(self._by_customer, {"p_customer": payment.customer})
            if row is None:
                return Recorded("unknown_customer")
            account_id, did = int(row[0]), str(row[1])
        balance = yield from self.grant_op(account_id, payment.units, payment.note)
        yield Exec(
            self._insert,
            {
                "p_source": source,
                "p_event": payment.event_id,
                "p_id": account_id,
                "p_amount": payment.units,
                "p_now": time.time(),
            },
        )
        return Recorded("granted", did, balance)


def _unique_violation(exc: BaseException) -> bool:
    """A unique index refused the row (the store runs the drivers' own connections)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE" in str(exc)
    return getattr(exc, "sqlstate", None) == "23505"
