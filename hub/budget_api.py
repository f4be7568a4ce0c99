"""Spend caps over HTTP: an admin caps any key or account; a user may cap their own keys,
only ever narrowing what they can spend.

`PUT /api/admin/keys/{key_id}/budget`, `PUT /api/admin/accounts/{did}/budget` and
`PUT /api/user/keys/{key_id}/budget` take `{"budget": "5", "period": "month"}` (budget in
credits, null: no cap; period day, week, month or life) and answer with the cap as shown:
budget, period, spent this period and resets_at (epoch seconds).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub import bounds
from hub.bodies import json_object
from hub.json_route import JsonRoute
from hub.store.admin import Admin
from hub.store.budget_admin import Budgets
from hub.usage_api import admin_only, identity_of, shown
from middleware.errors import HubError


def routes(admin: Admin) -> list[JsonRoute]:
    budgets = Budgets(admin.store)

    async def key_budget(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        cap = _given(await json_object(request))
        caller = identity_of(request)
        own_only = request.url.path.startswith("/api/user/")
        current = await budgets.key_budget(key_id)
        # On the user API, others' keys do not exist (as for revoking them).
        if current is None or (own_only and current["user_did"] != caller.user_did):
            raise HubError(404, "not_found", f"No key with id {key_id}.")
        if own_only:
            _narrows(current, cap)
        await budgets.set_key_budget(key_id, *cap)
        return JSONResponse(shown({"id": key_id, **_cap_of(await budgets.key_budget(key_id))}))

    async def account_budget(request: Request) -> Response:
        if (refused := admin_only(request)) is not None:
            return refused
        did = bounds.text(request.path_params["did"], "did")
        cap = _given(await json_object(request))
        await budgets.set_account_budget(await admin.ensure_account(did), *cap)
        return JSONResponse(shown({"user_did": did, **_cap_of(await budgets.account_budget(did))}))

    async def admin_key_budget(request: Request) -> Response:
        if (refused := admin_only(request)) is not None:
            return refused
        return await key_budget(request)

    return [
        JsonRoute("/api/admin/keys/{key_id}/budget", admin_key_budget, methods=["PUT"]),
        JsonRoute("/api/admin/accounts/{did}/budget", account_budget, methods=["PUT"]),
        JsonRoute("/api/user/keys/{key_id}/budget", key_budget, methods=["PUT"]),
    ]


def _given(body: dict[str, Any]) -> tuple[int | None, str | None]:
    cap = bounds.budget(body)
    if cap is None:
        raise HubError(400, "missing_field", "The field 'budget' is required (null: no cap).")
    return cap


def _narrows(current: dict[str, Any], cap: tuple[int | None, str | None]) -> None:
    """A user may cap a key that has no cap, or lower its cap within the same period:
    widening, clearing or changing the period of a cap is an admin's to do."""
    budget, period = cap
    if current["budget"] is None and budget is not None:
        return
    if budget is not None and period == current["period"] and budget <= current["budget"]:
        return
    raise HubError(
        403,
        "budget_not_narrower",
        "You may set a budget on your own key that has none, or lower it within the same "
        "period; to raise, clear or change its period, ask an admin.",
        "budget",
    )


def _cap_of(row: dict[str, Any] | None) -> dict[str, Any]:
    assert row is not None  # set just now; keys and accounts are never deleted
    return {k: row[k] for k in ("budget", "period", "spent", "resets_at")}
