"""The JSON API over calls and money: `/api/user/...` for the caller's own data, and
`/api/admin/...` (admins only, 403 otherwise) for everyone's. Issue 4 builds the rest of the
operator's side (accounts, keys, rates, providers) on these."""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub.json_route import JsonRoute
from hub.store.admin import Admin
from middleware.call import Identity, get_identity
from middleware.errors import error_body
from middleware.money import to_credits

MAX_PAGE = 500
_MONEY = {
    "credits",
    "balance",
    "granted",
    "metered",
    "amount",
    "input_rate",
    "output_rate",
    "cached_rate",
    "image_rate",
}
_BUCKETS = {"hour": 3600, "day": 86400}


def routes(admin: Admin) -> list[JsonRoute]:
    async def balance(request: Request) -> Response:
        identity = identity_of(request)
        ledger = await admin.ledger(identity.user_did)
        return JSONResponse(shown({"user_did": identity.user_did, **ledger}))

    async def my_calls(request: Request) -> Response:
        return await _calls(request, admin, user_did=identity_of(request).user_did)

    async def my_usage(request: Request) -> Response:
        return await _usage(request, admin, user_did=identity_of(request).user_did)

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


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    limit = min(_int(q.get("limit"), 50), MAX_PAGE)
    return {
        "app_did": q.get("app"),
        "model": q.get("model"),
        "status": q.get("status"),
        "since": _float(q.get("since")),
        "until": _float(q.get("until")),
        "limit": limit,
        "offset": _int(q.get("offset"), 0),
    }


async def _calls(request: Request, admin: Admin, user_did: str | None) -> Response:
    filters = _filters(request)
    rows = await admin.list_calls(user_did=user_did, detached=True, **filters)
    if request.query_params.get("format") == "csv":
        return _csv(rows)
    more = len(rows) == filters["limit"]
    return JSONResponse(
        {
            "data": [shown(row) for row in rows],
            "next_offset": filters["offset"] + len(rows) if more else None,
        }
    )


async def _usage(request: Request, admin: Admin, user_did: str | None) -> Response:
    """Calls, tokens, credits, errors and p50/p95 latency and time to first byte, per time
    bucket (hour or day) and model, over the window asked for (default: the last 7 days)."""
    q = request.query_params
    bucket = _BUCKETS.get(q.get("group", "day"), 86400)
    since = _float(q.get("since")) or time.time() - 7 * 86400
    rows = await admin.list_calls(
        user_did=user_did,
        app_did=q.get("app"),
        model=q.get("model"),
        since=since,
        until=_float(q.get("until")),
        limit=100_000,
        detached=True,
    )
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(int(row["request_at"] // bucket * bucket), row["model"])].append(row)
    data = []
    for (start, model), calls in sorted(groups.items()):
        durations = sorted(c["duration_ms"] for c in calls if c["duration_ms"] is not None)
        ttfbs = sorted(c["ttfb_ms"] for c in calls if c["ttfb_ms"] is not None)
        data.append(
            {
                "start": start,
                "model": model,
                "calls": len(calls),
                "errors": sum(1 for c in calls if c["status"] == "failed"),
                "input_tokens": sum(c["input_tokens"] for c in calls),
                "output_tokens": sum(c["output_tokens"] for c in calls),
                "credits": str(to_credits(sum(c["credits"] for c in calls))),
                "latency_ms": {"p50": _pct(durations, 0.5), "p95": _pct(durations, 0.95)},
                "ttfb_ms": {"p50": _pct(ttfbs, 0.5), "p95": _pct(ttfbs, 0.95)},
            }
        )
    return JSONResponse({"group": "hour" if bucket == 3600 else "day", "data": data})


def _csv(rows: list[dict[str, Any]]) -> Response:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(shown(row) for row in rows)
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"content-disposition": 'attachment; filename="calls.csv"'},
    )


def shown(row: dict[str, Any]) -> dict[str, Any]:
    """Money as exact decimal strings, never floats."""
    return {
        k: str(to_credits(v)) if k in _MONEY and isinstance(v, int) else v for k, v in row.items()
    }


def _pct(values: list[int], q: float) -> int | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def _int(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.isdigit() else default


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
