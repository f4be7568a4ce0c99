"""The dashboard and the playground: server-rendered pages over the same store the JSON API
reads. Admins see everyone; a user sees their own calls, keys and credits.

Pages only read. What changes state (grants, keys, rates, provider keys) is sent by a few
lines of script as JSON to the admin and user APIs, so the one CSRF rule there (a session
must send JSON) covers the dashboard too.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from hub.analytics import TIMED_CALLS, Window, totals, usage
from hub.catalog import listed_models
from hub.dashboard.charts import Bar, Series, bar_chart
from hub.json_route import JsonRoute
from hub.metrics import Metrics
from hub.outbox.status import status_line
from hub.provider_health import provider_report
from hub.providers.registry import ProviderRegistry
from hub.query import MAX_OFFSET, whole
from hub.settings import Settings
from hub.store.admin import Admin
from hub.store.outbox import OutboxStore
from hub.usage_api import identity_of
from middleware.money import credits_text

# Window name -> (seconds covered, seconds per chart bar).
WINDOWS = {
    "1h": (3600, 60),
    "24h": (86400, 3600),
    "7d": (7 * 86400, 6 * 3600),
    "30d": (30 * 86400, 86400),
}
PAGE_SIZE = 50
STATUSES = ("success", "failed", "processing")
OK, FAILED, INPUT, OUTPUT, CREDIT = "#3d7eff", "#e5484d", "#8e6cef", "#2fb380", "#f2a33a"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("hub.dashboard"), autoescape=select_autoescape())
    env.filters["when"] = _when
    env.filters["credits"] = lambda units: credits_text(units) if units is not None else ""
    env.filters["ms"] = lambda value: "" if value is None else f"{value:,} ms"
    env.filters["count"] = lambda value: f"{value:,}"
    return env


def routes(
    admin: Admin, registry: ProviderRegistry, settings: Settings, metrics: Metrics
) -> list[BaseRoute]:
    env = _environment()

    def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        me = identity_of(request)
        page = env.get_template(template).render(
            me=me, path=request.url.path, billing=settings.billing, **context
        )
        return HTMLResponse(page, status_code=status)

    def admins_only(request: Request) -> Response | None:
        if identity_of(request).is_admin:
            return None
        return render(request, "denied.html", status=403, title="Admins only")

    async def home(request: Request) -> Response:
        return RedirectResponse("/dashboard", status_code=303)

    async def overview(request: Request) -> Response:
        me = identity_of(request)
        window = request.query_params.get("window", "24h")
        if window not in WINDOWS:
            window = "24h"
        span, step = WINDOWS[window]
        now = time.time()
        scope = Window(since=now - span, user_did=None if me.is_admin else me.user_did)
        store = admin.store
        bar_figures = await usage(store, scope, step, None, timings=())  # charts: no times
        per_bar = {e["start"]: e for e in bar_figures}
        # The first bar is partly before the window: it shows only the window's calls.
        bars = [
            (_bucket_label(start, step), per_bar.get(start))
            for start in range(int(scope.since // step * step), int(now) + 1, step)
        ]
        charts = [
            bar_chart(
                "Calls",
                (Series("ok", OK), Series("failed", FAILED)),
                [Bar(label, _calls(e)) for label, e in bars],
            ),
            bar_chart(
                "Tokens",
                (Series("input", INPUT), Series("output", OUTPUT)),
                [Bar(label, _tokens(e)) for label, e in bars],
            ),
            bar_chart(
                "Credits",
                (Series("credits", CREDIT),),
                [Bar(label, (Decimal(e["credits"]) if e else Decimal(0),)) for label, e in bars],
            ),
        ]
        dimensions = ("model", "app", "user") if me.is_admin else ("model", "app")
        # The tables show p95 latency only: time to first byte would be one more sort each.
        figures = await asyncio.gather(
            totals(store, scope),
            *(usage(store, scope, None, by, timings=("duration_ms",)) for by in dimensions),
        )
        breakdowns = {
            by: _ranked(entries) for by, entries in zip(dimensions, figures[1:], strict=True)
        }
        accounts = await admin.list_accounts() if me.is_admin else []
        return render(
            request,
            "overview.html",
            title="Overview",
            window=window,
            windows=list(WINDOWS),
            totals=figures[0],
            timed_calls=TIMED_CALLS,
            charts=charts,
            breakdowns=breakdowns,
            ledger=await admin.ledger(me.user_did),
            out_of_credit=[a for a in accounts if _out_of_credit(a)],
            accounts=len(accounts),
            in_flight=metrics.server_in_flight(),
            outbox=await _outbox_status(admin, settings) if me.is_admin else None,
        )

    async def calls(request: Request) -> Response:
        me = identity_of(request)
        q = request.query_params
        filters = {
            "user": (q.get("user") or None) if me.is_admin else me.user_did,
            "app": q.get("app") or None,
            "model": q.get("model") or None,
            "status": q.get("status") if q.get("status") in STATUSES else None,
        }
        window = q.get("window", "all")
        since = time.time() - WINDOWS[window][0] if window in WINDOWS else None
        page = max(1, whole(request, "page", 1, MAX_OFFSET // PAGE_SIZE))
        rows = await admin.list_calls(
            user_did=filters["user"],
            app_did=filters["app"],
            model=filters["model"],
            status=filters["status"],
            since=since,
            limit=PAGE_SIZE + 1,  # one more tells whether there is a next page
            offset=(page - 1) * PAGE_SIZE,
            detached=True,
        )
        kept = {k: v for k, v in filters.items() if v and not (k == "user" and not me.is_admin)}
        export = {**kept, "format": "csv"} | ({"since": f"{since:.0f}"} if since else {})
        api = "/api/admin/calls" if me.is_admin else "/api/user/calls"
        here = {**kept, "window": window}
        return render(
            request,
            "calls.html",
            title="Calls",
            rows=rows[:PAGE_SIZE],
            filters=filters,
            window=window,
            windows=["all", *WINDOWS],
            statuses=STATUSES,
            page=page,
            prev_url=f"?{urlencode({**here, 'page': page - 1})}" if page > 1 else None,
            next_url=f"?{urlencode({**here, 'page': page + 1})}" if len(rows) > PAGE_SIZE else None,
            export_url=f"{api}?{urlencode(export)}",
        )

    async def keys(request: Request) -> Response:
        me = identity_of(request)
        user = (request.query_params.get("user") or None) if me.is_admin else me.user_did
        listed = await admin.list_keys(user)
        now = time.time()
        for key in listed:
            key["state"] = (
                "revoked"
                if key["revoked_at"]
                else "expired"
                if key["expires_at"] and key["expires_at"] <= now
                else "live"
            )
        listed.reverse()  # newest first
        api = "/api/admin/keys" if me.is_admin else "/api/user/keys"
        return render(request, "keys.html", title="API keys", keys=listed, api=api, user=user)

    async def accounts(request: Request) -> Response:
        if (refused := admins_only(request)) is not None:
            return refused
        return render(
            request,
            "accounts.html",
            title="Accounts",
            accounts=sorted(await admin.list_accounts(), key=lambda a: a["balance"]),
            grants=await admin.list_grants(limit=20),
        )

    async def rates(request: Request) -> Response:
        return render(request, "rates.html", title="Rates", rates=await admin.list_rates())

    async def providers(request: Request) -> Response:
        if (refused := admins_only(request)) is not None:
            return refused
        return render(
            request,
            "providers.html",
            title="Providers",
            providers=await provider_report(registry, settings, admin.store),
            stored=await admin.list_credentials(),
        )

    async def playground(request: Request) -> Response:
        models = [m["id"] for m in await listed_models(admin, registry)]
        rated = {r["model"] for r in await admin.list_rates() if r["type"] == "chatCompletion"}
        if settings.billing:
            models = [m for m in models if m in rated]  # unpriced models are refused
        return render(request, "playground.html", title="Playground", models=models)

    static = Path(__file__).parent / "static"
    return [
        JsonRoute("/", home),
        JsonRoute("/dashboard", overview),
        JsonRoute("/dashboard/calls", calls),
        JsonRoute("/dashboard/keys", keys),
        JsonRoute("/dashboard/accounts", accounts),
        JsonRoute("/dashboard/rates", rates),
        JsonRoute("/dashboard/providers", providers),
        JsonRoute("/playground", playground),
        Mount("/static", WholeFiles(directory=static), name="static"),
    ]


class WholeFiles(StaticFiles):
    """The dashboard's assets, always whole: they are a few KB, and Starlette answers a
    Range it cannot satisfy in plain text rather than the hub's JSON error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
            scope = {**scope, "headers": headers}
        await super().__call__(scope, receive, send)


def _bucket_label(start: int, step: int) -> str:
    fmt = "%Y-%m-%d" if step >= 86400 else "%m-%d %H:%M"
    return time.strftime(fmt, time.gmtime(start))


def _calls(entry: dict[str, Any] | None) -> tuple[int, int]:
    return (entry["calls"] - entry["errors"], entry["errors"]) if entry else (0, 0)


def _tokens(entry: dict[str, Any] | None) -> tuple[int, int]:
    return (entry["input_tokens"], entry["output_tokens"]) if entry else (0, 0)


def _ranked(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The costliest first, then the busiest (top 10)."""
    entries.sort(key=lambda e: (Decimal(e["credits"]), e["calls"]), reverse=True)
    return entries[:10]


def _out_of_credit(account: dict[str, Any]) -> bool:
    """Spent past zero, or spent all it was given; not an account never given any."""
    return bool(account["balance"] < 0 or (account["balance"] == 0 and account["granted"] > 0))


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):  # beyond what a calendar shows
        return "far future" if timestamp > 0 else "long ago"


async def _outbox_status(admin: Admin, settings: Settings) -> str | None:
    """The sinks' backlog (hub.outbox), when any sink is configured."""
    names = [sink.name for sink in settings.outbox.sinks]
    return await status_line(OutboxStore(admin.store), names, time.time()) if names else None
