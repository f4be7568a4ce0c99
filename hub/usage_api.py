"""The JSON API over calls and money: `/api/user/...` for the caller's own data, and
`/api/admin/...` (admins only, 403 otherwise) for everyone's. Issue 4 builds the rest of the
operator's side (accounts, keys, rates, providers) on these."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub.analytics import BUCKETS, DIMENSIONS, TIMED_CALLS, Window, usage
from hub.json_route import JsonRoute
from hub.query import MAX_OFFSET, moment, whole
from hub.store.admin import Admin
from hub.store.schema import model_calls
from middleware.call import Identity, get_identity
from middleware.errors import HubError, error_body
from middleware.money import credits_text

MAX_PAGE = 500
MAX_EXPORT = 100_000
OPERATOR_ONLY = frozenset({"credential", "account_id", "instance_id"})
FORMULA_STARTS = frozenset("=+-@\t\r")
_MONEY = {
    "credits",
    "balance",
    "granted",
    "metered",
    "amount",
    "input_rate",
    "output_rate",
    "cached_rate",
    "cache_write_rate",
    "image_rate",
    "budget",
    "spent",
}


def routes(admin: Admin) -> list[JsonRoute]:
    async def balance(request: Request) -> Response:
        identity = identity_of(request)
        ledger = await admin.ledger(identity.user_did)
        return JSONResponse(shown({"user_did": identity.user_did, **ledger}))

    async def my_calls(request: Request) -> Response:
        return await _calls(request, admin, user_did=identity_of(request).user_did, own=True)

    async def my_usage(request: Request) -> Response:
        return await _usage(request, admin, user_did=identity_of(request).user_did)

    async def my_grants(request: Request) -> Response:
        return await ledger_page(request, admin.list_grants, identity_of(request).user_did)

    async def my_meter_events(request: Request) -> Response:
        return await ledger_page(request, admin.list_meter_events, identity_of(request).user_did)

    async def all_meter_events(request: Request) -> Response:
        if (refused := admin_only(request)) is not None:
            return refused
        user = request.query_params.get("user")
        return await ledger_page(request, admin.list_meter_events, user)

    async def all_calls(request: Request) -> Response:
        if (refused := admin_only(request)) is not None:
            return refused
        return await _calls(request, admin, user_did=request.query_params.get("user"))

    async def all_usage(request: Request) -> Response:
        if (refused := admin_only(request)) is not None:
            return refused
        return await _usage(request, admin, user_did=request.query_params.get("user"))

    return [
        JsonRoute("/api/user/balance", balance),
        JsonRoute("/api/user/calls", my_calls),
        JsonRoute("/api/user/usage", my_usage),
        JsonRoute("/api/user/grants", my_grants),
        JsonRoute("/api/user/meter-events", my_meter_events),
        JsonRoute("/api/admin/meter-events", all_meter_events),
        JsonRoute("/api/admin/calls", all_calls),
        JsonRoute("/api/admin/usage", all_usage),
    ]


def identity_of(request: Request) -> Identity:
    identity = get_identity(request.scope)
    assert identity is not None  # the auth middleware lets no anonymous request this far
    return identity


def admin_only(request: Request) -> Response | None:
    if identity_of(request).is_admin:
        return None
    return Response(
        error_body(403, "admin_only", "This route is for the hub's admins."),
        status_code=403,
        media_type="application/json",
    )


async def ledger_page(
    request: Request, lister: Callable[..., Awaitable[list[dict[str, Any]]]], user: str | None
) -> Response:
    """One page of a ledger listing (grants, meter events), of one user or everyone's."""
    limit = limit_of(request)
    rows = await lister(user, limit=limit, offset=offset_of(request))
    return page_of(request, rows, limit)


def limit_of(request: Request) -> int:
    return max(1, whole(request, "limit", 50, MAX_PAGE))


def offset_of(request: Request) -> int:
    return whole(request, "offset", 0, MAX_OFFSET)


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    limit = limit_of(request)
    return {
        "app_did": q.get("app"),
        "model": q.get("model"),
        "status": q.get("status"),
        "request_id": q.get("request_id"),
        "client_format": q.get("client_format"),
        "since": moment(request, "since"),
        "until": moment(request, "until"),
        "limit": limit,
        "offset": offset_of(request),
    }


async def _calls(
    request: Request, admin: Admin, user_did: str | None, own: bool = False
) -> Response:
    filters = _filters(request)
    as_csv = request.query_params.get("format") == "csv"
    if as_csv and "limit" not in request.query_params:
        filters["limit"] = MAX_EXPORT  # an export is the whole filtered list, not a page
    rows = await admin.list_calls(user_did=user_did, detached=True, **filters)
    if own:
        # Which of the operator's provider keys served a call (even masked) and internal
        # ids are the operator's business, not the caller's.
        rows = [{k: v for k, v in row.items() if k not in OPERATOR_ONLY} for row in rows]
    if as_csv:
        columns = [k for k in model_calls.c.keys() if not (own and k in OPERATOR_ONLY)]
        return _csv(rows, columns)
    return page_of(request, rows, filters["limit"])


async def _usage(request: Request, admin: Admin, user_did: str | None) -> Response:
    """Usage per time bucket (`group`: hour or day) and `by` model, user or app (or `total`),
    over the window asked for (default: the last 7 days)."""
    q = request.query_params
    group = q.get("group", "day")
    by = q.get("by", "model")
    if group not in BUCKETS:
        raise HubError(400, "invalid_field", "'group' must be hour or day.", "group")
    if by not in DIMENSIONS and by != "total":
        raise HubError(
            400, "invalid_field", "'by' must be model, user, app, provider or total.", "by"
        )
    since = moment(request, "since")
    window = Window(
        since=time.time() - 7 * 86400 if since is None else since,
        until=moment(request, "until"),
        user_did=user_did,
        app_did=q.get("app"),
        model=q.get("model"),
    )
    data = await usage(admin.store, window, BUCKETS[group], None if by == "total" else by)
    # Percentiles rank the window's latest TIMED_CALLS calls only: say when that cut in.
    sampled = sum(entry["calls"] for entry in data) > TIMED_CALLS
    return JSONResponse({"group": group, "by": by, "percentiles_sampled": sampled, "data": data})


def page_of(request: Request, rows: list[dict[str, Any]], limit: int) -> Response:
    """One page of rows, and where the next starts (None on the last page)."""
    more = len(rows) == limit
    next_offset = offset_of(request) + len(rows) if more else None
    return JSONResponse({"data": [shown(r) for r in rows], "next_offset": next_offset})


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> Response:
    """Calls for a spreadsheet: times as ISO 8601 UTC, booleans as true/false; the header
    row even when no call matched."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(_for_spreadsheet(shown(row)) for row in rows)
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"content-disposition": 'attachment; filename="calls.csv"'},
    )


def _for_spreadsheet(row: dict[str, Any]) -> dict[str, Any]:
    def cell(key: str, value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value[:1] in FORMULA_STARTS:
            # Text from callers (an app header, a model name) must not run as a formula.
            return "'" + value
        if key.endswith("_at") and isinstance(value, int | float):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(value))
            return f"{stamp}.{int(value % 1 * 1000):03d}Z"
        return value

    return {key: cell(key, value) for key, value in row.items()}


def shown(row: dict[str, Any]) -> dict[str, Any]:
    """Money as exact decimal strings, never floats."""
    return {k: credits_text(v) if k in _MONEY and isinstance(v, int) else v for k, v in row.items()}
