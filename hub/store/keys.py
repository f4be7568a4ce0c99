"""API keys: made (shown once, stored as a hash), limited, listed and revoked."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, select

from hub.store.accounts import StoreActions, limit_columns
from hub.store.budget_admin import budget_columns, shown_budget
from hub.store.raw import Exec, Operation, Prepared
from hub.store.schema import accounts, api_keys
from hub.store.sql import patterns_json, read_patterns
from middleware.auth import hash_key, new_api_key


class Keys(StoreActions):
    """The API keys of accounts."""

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

    async def revoke_key(self, key_id: str, *, sign_out_owner: bool = False) -> bool:
        """Revoke a key; False if there is no such live key. Sessions opened with the key
        end with it; `sign_out_owner` ends every other session of its owner too, in the
        same transaction (an operator cutting someone off: see Accounts.sign_out)."""
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

    async def key_owner(self, key_id: str) -> str | None:
        """The user DID a key belongs to, or None if there is no such key."""
        rows = await self.store.query(
            select(accounts.c.did)
            .select_from(api_keys.join(accounts, api_keys.c.account_id == accounts.c.id))
            .where(api_keys.c.id == key_id)
        )
        return str(rows[0]["did"]) if rows else None

    async def list_keys(self, did: str | None = None) -> list[dict[str, Any]]:
        """Every key (of one user, or of all), oldest first; never a secret or its hash."""
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
                *limit_columns(api_keys),
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
