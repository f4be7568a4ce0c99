"""Provider keys kept in the database, sealed at rest, shown only masked."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select

from hub.secrets import SecretBox, mask
from hub.store.accounts import StoreActions
from hub.store.raw import Exec, Fetch, Operation, Prepared
from hub.store.schema import ai_credentials


@dataclass(frozen=True, slots=True)
class ProviderKey:
    """A provider key fit to store (made by hub.admin_input.provider_key, which checks it):
    a configured provider, a key that can go into an HTTP header of every call routed to
    it, a weight that fits an INTEGER column."""

    provider: str
    secret: str
    weight: int = 100


class Credentials(StoreActions):
    """Stored provider keys (the config file may hold others)."""

    async def add_credential(self, key: ProviderKey, box: SecretBox) -> dict[str, Any]:
        """Store a provider key, sealed; returns its id and masked form (never the key).
        Only a checked key (hub.admin_input.provider_key) is taken."""
        row = {
            "id": "cred_" + secrets.token_hex(8),
            "provider": key.provider,
            "sealed": box.seal(key.secret),
            "masked": mask(key.secret),
            "weight": key.weight,
            "created_at": time.time(),
        }
        await self.store.execute(ai_credentials.insert().values(**row))
        return {k: row[k] for k in ("id", "provider", "masked", "weight", "created_at")}

    async def list_credentials(self) -> list[dict[str, Any]]:
        """Every live stored key, masked."""
        c = ai_credentials.c
        return await self.store.query(
            select(c.id, c.provider, c.masked, c.weight, c.created_at)
            .where(c.removed_at.is_(None))
            .order_by(c.provider, c.created_at)
        )

    async def remove_credential(self, credential_id: str) -> bool:
        """Remove a stored key (kept, marked removed); False if there is no such live key."""
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
