"""One-time sign-in links, kept only as a hash."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import select

from hub.store.accounts import Accounts
from hub.store.schema import login_links
from middleware.auth import hash_key


class LoginLinks(Accounts):
    """Tokens an operator hands a user to sign in once."""

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
