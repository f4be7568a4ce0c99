"""Accounts: who they are, their rate-limit overrides and their sessions."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import BigInteger, Table, cast, func, select

from hub.store.budget_admin import budget_columns, shown_budget
from hub.store.raw import Exec, Fetch, Operation
from hub.store.schema import accounts, credit_grants
from hub.store.sql import SqlStore

WELCOME_NOTE = "welcome credits"


class StoreActions:
    """Base of the operator's actions on one concern of the store."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.sql = store.sql

    def _account_id(self, did: str) -> Operation[int]:
        """The account id of a user DID, creating the account in the caller's transaction."""
        row = yield Fetch(self.sql.find_account, {"p_did": did})
        if row is not None:
            return int(row[0])
        now = time.time()
        yield Exec(
            self.sql.insert_account,
            {"p_did": did, "p_name": None, "p_is_admin": False, "p_now": now},
        )
        row = yield Fetch(self.sql.find_account, {"p_did": did})
        account_id = int(row[0])
        if self.store.welcome_credits:
            # A ledger row like any grant (its trigger moves the balance), made once: only
            # the transaction that creates the account gets here.
            grant = {"p_amount": self.store.welcome_credits, "p_note": WELCOME_NOTE, "p_now": now}
            yield Exec(self.sql.insert_grant, {"p_id": account_id, **grant})
        return account_id

    async def _set_limits(self, table: Table, where: Any, limits: Mapping[str, int | None]) -> bool:
        """Write rate-limit overrides (keys and accounts alike); False if nothing matched."""
        values = {f"limit_{name}": value for name, value in limits.items()}
        if not values:
            found = await self.store.query(select(table.c.id).where(where))
            return bool(found)
        changed = await self.store.execute(table.update().where(where).values(**values))
        self.store.forget_caches()
        return changed > 0


class Accounts(StoreActions):
    """Accounts by user DID."""

    async def ensure_account(self, did: str, *, is_admin: bool | None = None) -> int:
        """The account id for a user DID, creating the account if it is new."""

        def op() -> Operation[int]:
            account_id = yield from self._account_id(did)
            if is_admin is not None:
                yield Exec(self.sql.set_admin, {"p_id": account_id, "p_is_admin": is_admin})
            return account_id

        return await self.store.run(op)

    async def set_account_limits(self, did: str, limits: Mapping[str, int | None]) -> bool:
        """Set an account's rate limits, as Keys.set_key_limits (making the account if new)."""
        await self.ensure_account(did)
        return await self._set_limits(accounts, accounts.c.did == did, limits)

    async def list_accounts(self) -> list[dict[str, Any]]:
        """Every account with its balance and all it was ever granted."""
        c = accounts.c
        # PostgreSQL sums bigints as numeric: cast back, so money stays an integer of units.
        granted = (
            select(cast(func.coalesce(func.sum(credit_grants.c.amount), 0), BigInteger))
            .where(credit_grants.c.account_id == c.id)
            .scalar_subquery()
        )
        rows = await self.store.query(
            select(
                c.did,
                c.name,
                c.is_admin,
                c.balance,
                granted.label("granted"),
                c.created_at,
                *limit_columns(accounts),
                *budget_columns(accounts),
            ).order_by(c.created_at)
        )
        return [shown_budget(row) for row in rows]

    async def sign_out(self, did: str) -> bool:
        """End every session of this person, whichever way it was opened (a one-time link
        too): each cookie carries the account's session epoch, and this moves it on. False
        if there is no such account."""
        c = accounts.c
        changed = await self.store.execute(
            accounts.update().where(c.did == did).values(session_epoch=c.session_epoch + 1)
        )
        return changed > 0

    async def end_sessions(self, did: str, epoch: int) -> bool:
        """Void every session cookie of this person (each carries the epoch it was signed
        with, and this moves the account's on) — if `epoch` is still the current one: a
        cookie voided before cannot sign its owner out again."""
        c = accounts.c
        changed = await self.store.execute(
            accounts.update()
            .where(c.did == did, c.session_epoch == epoch)
            .values(session_epoch=c.session_epoch + 1)
        )
        return changed > 0


def limit_columns(table: Table) -> list[Any]:
    """A table's rate-limit overrides, named as the API and CLI name them (`rpm`, ...)."""
    c = table.c
    return [
        c.limit_rpm.label("rpm"),
        c.limit_tpm.label("tpm"),
        c.limit_concurrent.label("concurrent"),
    ]
