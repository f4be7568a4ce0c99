"""Listing the model calls (the records; writing them is the settle's, in sql.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from hub.store.accounts import StoreActions
from hub.store.schema import model_calls


class Calls(StoreActions):
    """The call records, for the CLI, the usage API and the pages."""

    async def list_calls(
        self,
        *,
        user_did: str | None = None,
        app_did: str | None = None,
        model: str | None = None,
        status: str | None = None,
        request_id: str | None = None,
        client_format: str | None = None,
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
            (c.client_format, client_format),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(c.request_at >= since)
        if until is not None:
            query = query.where(c.request_at < until)
        return await (self.store.read if detached else self.store.query)(query)
