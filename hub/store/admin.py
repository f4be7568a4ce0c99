"""Operator actions on the store: accounts, keys, credits, rates, call listings."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, cast, func, select

from hub import bounds
from hub.secrets import SecretBox, mask
from hub.store.budget_admin import budget_columns, shown_budget
from hub.store.raw import Exec, Fetch, Operation, Prepared, rows_changed
from hub.store.schema import (
    accounts,
    ai_credentials,
    ai_model_rates,
    api_keys,
    credit_grants,
    login_links,
    meter_events,
    model_calls,
)
from hub.store.sql import SqlStore, patterns_json, read_patterns
from middleware.auth import hash_key, new_api_key
from middleware.call import CallType

CALL_TYPES: tuple[CallType, ...] = ("chatCompletion", "embedding", "imageGeneration")
RATE_COLUMNS = ("input_rate", "output_rate", "cached_rate", "image_rate", "cache_write_rate")


class Admin:
    """What `aigne-hub keys|credits|rates|calls` and the tests do to a store."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.sql = store.sql

    def _account_id(self, did: str) -> Operation[int]:
        row = yield Fetch(self.sql.find_account, {"p_did": did})
        if row is not None:
            return int(row[0])
        yield Exec(
            self.sql.insert_account,
            {"p_did": did, "p_name": None, "p_is_admin": False, "p_now": time.time()},
        )
        row = yield Fetch(self.sql.find_account, {"p_did": did})
        return int(row[0])

    async def ensure_account(self, did: str, *, is_admin: bool | None = None) -> int:
        """The account id for a user DID, creating the account if it is new."""

        def op() -> Operation[int]:
            account_id = yield from self._account_id(did)
            if is_admin is not None:
                yield Exec(self.sql.set_admin, {"p_id": account_id, "p_is_admin": is_admin})
            return account_id

        return await self.store.run(op)

    async def create_key(
        self,
        did: str,
        *,
        name: str | None = None,
        app_did: str | None = None,
        expires_at: float | None = None,
        limits: Mapping[str, int | None] | None = None,
        models: list[str] | None = None,
    ) -> tuple[str, str]:
        """(key id, secret): the secret is returned here once and stored only as a hash.
        `limits`: its rate limits (see set_key_limits); `models`: the patterns of the models
        it may call (bounds.model_patterns), None for every model."""
        secret = new_api_key()
        key_id = "key_" + secrets.token_hex(8)

        def op() -> Operation[None]:
            account_id = yield from self._account_id(did)
            yield Exec(
                self.sql.insert_key,
                {
                    "p_id": key_id,
                    "p_account_id": account_id,
                    "p_hash": hash_key(secret),
                    "p_prefix": secret[:8],
                    "p_name": name,
                    "p_app_did": app_did,
                    "p_now": time.time(),
                    "p_expires_at": expires_at,
                    "p_models": patterns_json(models),
                },
            )

        await self.store.run(op)
        if limits:
            await self.set_key_limits(key_id, limits)
        return key_id, secret

    async def set_key_limits(self, key_id: str, limits: Mapping[str, int | None]) -> bool:
        """Set a key's rate limits — `rpm`, `tpm`, `concurrent` (bounds.limit_overrides):
        a number (0: none), or None for the configured default; those not given stay.
        False if there is no such key."""
        return await self._set_limits(api_keys, api_keys.c.id == key_id, limits)

    async def set_account_limits(self, did: str, limits: Mapping[str, int | None]) -> bool:
        """Set an account's rate limits, as set_key_limits (making the account if new)."""
        await self.ensure_account(did)
        return await self._set_limits(accounts, accounts.c.did == did, limits)

    async def _set_limits(self, table: Table, where: Any, limits: Mapping[str, int | None]) -> bool:
        values = {f"limit_{name}": value for name, value in limits.items()}
        if not values:
            found = await self.store.query(select(table.c.id).where(where))
            return bool(found)
        changed = await self.store.execute(table.update().where(where).values(**values))
        self.store.forget_caches()
        return changed > 0

    async def revoke_key(self, key_id: str, *, sign_out_owner: bool = False) -> bool:
        """Revoke a key; False if there is no such live key. Sessions opened with the key
        end with it; `sign_out_owner` ends every other session of its owner too, in the
        same transaction (an operator cutting someone off: see `sign_out`)."""
        values = {"p_id": key_id, "p_now": time.time()}
        owner_out = Prepared(
            accounts.update()
            .where(
                accounts.c.id
                == select(api_keys.c.account_id)
                .where(api_keys.c.id == bindparam("p_id"))
                .scalar_subquery()
            )
            .values(session_epoch=accounts.c.session_epoch + 1),
            self.store.dialect,
        )

        def op() -> Operation[bool]:
            revoked = yield Exec(self.sql.revoke_key, values)
            if revoked and sign_out_owner:
                yield Exec(owner_out, {"p_id": key_id})
            return bool(revoked)

        return await self.store.run(op)

    async def sign_out(self, did: str) -> bool:
        """End every session of this person, whichever way it was opened (a one-time link
        too): each cookie carries the account's session epoch, and this moves it on. False
        if there is no such account."""
        c = accounts.c
        changed = await self.store.execute(
            accounts.update().where(c.did == did).values(session_epoch=c.session_epoch + 1)
        )
        return changed > 0

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
                *_limit_columns(accounts),
                *budget_columns(accounts),
            ).order_by(c.created_at)
        )
        return [shown_budget(row) for row in rows]

    async def key_owner(self, key_id: str) -> str | None:
        """The user DID a key belongs to, or None if there is no such key."""
        rows = await self.store.query(
            select(accounts.c.did)
            .select_from(api_keys.join(accounts, api_keys.c.account_id == accounts.c.id))
            .where(api_keys.c.id == key_id)
        )
        return str(rows[0]["did"]) if rows else None

    async def list_keys(self, did: str | None = None) -> list[dict[str, Any]]:
        query = (
            select(
                api_keys.c.id,
                accounts.c.did.label("user_did"),
                api_keys.c.prefix,
                api_keys.c.name,
                api_keys.c.app_did,
                api_keys.c.created_at,
                api_keys.c.last_used_at,
                api_keys.c.revoked_at,
                api_keys.c.expires_at,
                *_limit_columns(api_keys),
                api_keys.c.allowed_models.label("models"),
                *budget_columns(api_keys),
            )
            .select_from(api_keys.join(accounts, api_keys.c.account_id == accounts.c.id))
            .order_by(api_keys.c.created_at)
        )
        if did is not None:
            query = query.where(accounts.c.did == did)
        keys = await self.store.query(query)
        for key in keys:  # null: every model
            key["models"] = read_patterns(key["models"])
            shown_budget(key)
        return keys

    async def grant(self, did: str, units: int, note: str | None = None) -> int:
        """Add a credit grant (negative to take credits back); returns the new balance."""

        bounds.check_grant(units)

        def op() -> Operation[int]:
            account_id = yield from self._account_id(did)
            # Checked here, in the transaction that writes it: past the bound, SQLite would
            # store the sum as a float and PostgreSQL would refuse it.
            row = yield Fetch(self.sql.balance_to_change, {"p_id": account_id})
            bounds.check_balance(int(row[0]), units)
            yield Exec(
                self.sql.insert_grant,
                {"p_id": account_id, "p_amount": units, "p_note": note, "p_now": time.time()},
            )
            row = yield Fetch(self.sql.add_balance, {"p_id": account_id, "p_amount": units})
            return int(row[0])

        balance = await self.store.run(op)
        self.store.forget_caches()
        return balance

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
        return await self._ledger(credit_grants, (g.amount, g.note), did, limit, offset)

    async def list_meter_events(
        self, did: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """What calls took from balances, newest first: one ledger row per billed call."""
        m = meter_events.c
        return await self._ledger(meter_events, (m.call_id, m.amount), did, limit, offset)

    async def _ledger(
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

    async def set_rate(
        self,
        model: str,
        call_type: CallType,
        *,
        input_rate: int,
        output_rate: int,
        cached_rate: int | None = None,
        image_rate: int | None = None,
        cache_write_rate: int | None = None,
    ) -> None:
        """Create or replace the rate of a model for one call type."""
        values = {
            "input_rate": input_rate,
            "output_rate": output_rate,
            "cached_rate": cached_rate,
            "image_rate": image_rate,
            "cache_write_rate": cache_write_rate,
        }
        await self.set_rates([(model, call_type, values)])

    async def set_rates(self, rates: Sequence[tuple[str, str, Mapping[str, int | None]]]) -> None:
        """Create or replace several rates — (model, call type, {input_rate, output_rate,
        cached_rate, image_rate, cache_write_rate}) — all in one transaction: if one cannot
        be written, none is."""
        now = time.time()
        rows = [
            {"p_model": model, "p_type": call_type, "p_now": now}
            | {f"p_{name}": values.get(name) for name in RATE_COLUMNS}
            for model, call_type, values in rates
        ]

        def op() -> Operation[None]:
            for row in rows:
                if (yield Exec(self.sql.update_rate, row)) == 0:
                    yield Exec(self.sql.insert_rate, row)

        await self.store.run(op)
        self.store.forget_caches()

    async def delete_rate(self, model: str, call_type: CallType) -> bool:
        values = {"p_model": model, "p_type": call_type}
        deleted = await self.store.run(lambda: rows_changed(Exec(self.sql.delete_rate, values)))
        self.store.forget_caches()
        return deleted > 0

    async def list_rates(self) -> list[dict[str, Any]]:
        return await self.store.query(
            select(ai_model_rates).order_by(ai_model_rates.c.model, ai_model_rates.c.type)
        )

    async def list_calls(
        self,
        *,
        user_did: str | None = None,
        app_did: str | None = None,
        model: str | None = None,
        status: str | None = None,
        request_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
        detached: bool = False,
    ) -> list[dict[str, Any]]:
        """Newest first, `processing` (in-flight) calls included. `detached` reads on a
        connection of its own (big reads: see SqlStore.read)."""
        c = model_calls.c
        query = select(model_calls).order_by(c.request_at.desc(), c.id.desc())
        query = query.limit(limit).offset(offset)
        for column, value in (
            (c.user_did, user_did),
            (c.app_did, app_did),
            (c.model, model),
            (c.status, status),
            (c.request_id, request_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(c.request_at >= since)
        if until is not None:
            query = query.where(c.request_at < until)
        return await (self.store.read if detached else self.store.query)(query)

    # -- provider keys kept in the database -------------------------------------------

    async def add_credential(
        self, provider: str, secret: str, box: SecretBox, weight: int = 100
    ) -> dict[str, Any]:
        """Store a provider key, sealed; returns its id and masked form (never the key)."""
        # Checked here, for the CLI and the admin API alike: the key goes into an HTTP
        # header of every call routed to it, the weight into an INTEGER column.
        bounds.header_safe(secret, "key")
        bounds.fits(provider, "provider", 100)
        bounds.weight(weight)
        row = {
            "id": "cred_" + secrets.token_hex(8),
            "provider": provider,
            "sealed": box.seal(secret),
            "masked": mask(secret),
            "weight": weight,
            "created_at": time.time(),
        }
        await self.store.execute(ai_credentials.insert().values(**row))
        return {k: row[k] for k in ("id", "provider", "masked", "weight", "created_at")}

    async def list_credentials(self) -> list[dict[str, Any]]:
        c = ai_credentials.c
        return await self.store.query(
            select(c.id, c.provider, c.masked, c.weight, c.created_at)
            .where(c.removed_at.is_(None))
            .order_by(c.provider, c.created_at)
        )

    async def remove_credential(self, credential_id: str) -> bool:
        c = ai_credentials.c
        removed = await self.store.execute(
            ai_credentials.update()
            .where(c.id == credential_id, c.removed_at.is_(None))
            .values(removed_at=time.time())
        )
        return removed > 0

    async def reseal_credentials(self, box: SecretBox, done: SecretBox) -> int:
        """Seal again with `box`'s first key every stored provider key (removed ones too)
        that `done` cannot open yet, reading and writing in one transaction; the number
        resealed. A key `box` cannot open stops it before anything is written."""
        c = ai_credentials.c
        dialect = self.store.dialect
        read = Prepared(select(c.id, c.sealed).with_for_update(), dialect)
        update = Prepared(
            ai_credentials.update()
            .where(c.id == bindparam("p_id"))
            .values(sealed=bindparam("p_sealed")),
            dialect,
        )

        def op() -> Operation[int]:
            rows = yield Fetch(read, {}, all=True)
            resealed = [(row[0], box.reseal(row[1])) for row in rows if not done.opens(row[1])]
            for credential_id, sealed in resealed:
                yield Exec(update, {"p_id": credential_id, "p_sealed": sealed})
            return len(resealed)

        return await self.store.run(op)

    async def sealed_credentials(self) -> list[dict[str, Any]]:
        """Every live stored key, still sealed: for the hub to open at start."""
        c = ai_credentials.c
        return await self.store.query(
            select(c.provider, c.sealed, c.weight).where(c.removed_at.is_(None))
        )

    # -- one-time sign-in links ---------------------------------------------------------

    async def create_login_link(self, did: str, minutes: float = 10) -> str:
        """A one-time sign-in token for a user (kept only as a hash)."""
        token = secrets.token_urlsafe(32)
        await self.ensure_account(did)
        await self.store.execute(
            login_links.insert().values(
                token_hash=hash_key(token), user_did=did, expires_at=time.time() + minutes * 60
            )
        )
        return token

    async def use_login_link(self, token: str) -> str | None:
        """The user a live token signs in, spending it; None if unknown, used or expired."""
        c = login_links.c
        spent = await self.store.execute(
            login_links.update()
            .where(c.token_hash == hash_key(token), c.used_at.is_(None), c.expires_at > time.time())
            .values(used_at=time.time())
        )
        if not spent:
            return None
        rows = await self.store.query(select(c.user_did).where(c.token_hash == hash_key(token)))
        return str(rows[0]["user_did"])


def _limit_columns(table: Table) -> list[Any]:
    """A table's rate-limit overrides, named as the API and CLI name them (`rpm`, ...)."""
    c = table.c
    return [
        c.limit_rpm.label("rpm"),
        c.limit_tpm.label("tpm"),
        c.limit_concurrent.label("concurrent"),
    ]
