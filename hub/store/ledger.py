"""The ledger: credit grants and meter events, and the balance they add up to."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Table, select

from hub import bounds
from hub.store.accounts import StoreActions
from hub.store.raw import Exec, Fetch, Operation
from hub.store.schema import accounts, credit_grants, meter_events

# What the grant trigger (migration 15) raises, on SQLite and PostgreSQL alike.
BALANCE_OUT_OF_BOUNDS = "balance_out_of_bounds"


class Ledger(StoreActions):
    """Credit grants (the operator's) and meter events (the calls')."""

    async def grant(self, did: str, units: int, note: str | None = None) -> int:
        """Add a credit grant (negative to take credits back); returns the new balance.

        The grant's row moves the balance itself (a trigger, as a meter event's does:
        hub.store.migrate, migration 15), in the statement that writes it, and refuses a
        balance past ±MAX_BALANCE there."""
        bounds.check_grant(units)

        def op() -> Operation[int]:
            account_id = yield from self._account_id(did)
            return (yield from self.grant_op(account_id, units, note))

        try:
            balance = await self.store.run(op)
        except Exception as exc:
            await self.refuse_past_bounds(exc, did, units)
            raise
        self.store.forget_caches()
        return balance

    def grant_op(self, account_id: int, units: int, note: str | None) -> Operation[int]:
        """A grant's steps in the caller's transaction; the new balance."""
        yield Exec(
            self.sql.insert_grant,
            {"p_id": account_id, "p_amount": units, "p_note": note, "p_now": time.time()},
        )
        row = yield Fetch(self.sql.balance, {"p_id": account_id})
        return int(row[0])

    async def refuse_past_bounds(self, exc: BaseException, did: str, units: int) -> None:
        """A 400 naming the bound if the trigger refused a grant for it (nothing was
        written); returns for any other failure, for the caller to raise."""
        if BALANCE_OUT_OF_BOUNDS not in str(exc):
            return
        account = await self.store.find_account(did)
        now = 0 if account is None else await self.store.balance(account.account_id, fresh=True)
        bounds.check_balance(now, units)
        raise bounds.refuse("amount", "The balance moved past its bounds meanwhile.") from exc

    async def ledger(self, did: str) -> dict[str, int]:
        """The balance beside its ledger: granted, metered, and whether they agree."""

        def op() -> Operation[dict[str, int]]:
            found = yield Fetch(self.sql.find_account, {"p_did": did})
            if found is None:  # nobody has granted or spent anything yet
                return {"balance": 0, "granted": 0, "metered": 0}
            row = yield Fetch(self.sql.ledger_totals, {"p_id": int(found[0])})
            return {"balance": int(row[0]), "granted": int(row[1]), "metered": int(row[2])}

        return await self.store.run(op)

    async def list_grants(
        self, did: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Credit grants, newest first: one user's, or everyone's."""
        g = credit_grants.c
        return await self._rows(credit_grants, (g.amount, g.note), did, limit, offset)

    async def list_meter_events(
        self, did: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """What calls took from balances, newest first: one ledger row per billed call."""
        m = meter_events.c
        return await self._rows(meter_events, (m.call_id, m.amount), did, limit, offset)

    async def _rows(
        self, table: Table, columns: tuple[Any, ...], did: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """Rows of a ledger table (grants, meter events) with their owner's DID."""
        t = table.c
        query = (
            select(t.id, accounts.c.did.label("user_did"), *columns, t.created_at)
            .select_from(table.join(accounts, t.account_id == accounts.c.id))
            .order_by(t.created_at.desc(), t.id.desc())
            .limit(limit)
            .offset(offset)
        )
        if did is not None:
            query = query.where(accounts.c.did == did)
        return await self.store.query(query)
