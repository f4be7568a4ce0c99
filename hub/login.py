"""Signing people in to the dashboard: a one-time link, or a key pasted into a form.

Both end in the same signed session cookie (HttpOnly, SameSite=Lax), which the auth
middleware reads; programs keep using Bearer keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hub.json_route import JsonRoute
from hub.store.admin import Admin
from middleware.auth import SESSION_COOKIE, hash_key
from middleware.ports import KeyStore

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>AIGNE Hub: sign in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto}}
input{{width:100%;padding:.5rem;margin:.5rem 0}}button{{padding:.5rem 1rem}}
.error{{color:#b00}}</style></head><body><h1>AIGNE Hub</h1>
<p>Sign in with one of your API keys, or a one-time link from
<code>aigne-hub admin login-link</code>.</p>{error}
<form method="post" action="/login"><input name="key" type="password"
placeholder="ahk_..." autocomplete="off" autofocus><button>Sign in</button></form>
</body></html>"""


def routes(
    admin: Admin, keys: KeyStore, session_cookie: Callable[[str], str], max_age: int
) -> list[JsonRoute]:
    def signed_in(did: str) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_cookie(did),
            max_age=max_age,
            httponly=True,
            samesite="lax",
            path="/",
        )
        return response

    async def page(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(PAGE.format(error=""))
        # A urlencoded form of one field: parsed here rather than with python-multipart.
        body = await request.body()
        if len(body) > 4096:  # a public route: no reading of large bodies
            return HTMLResponse(PAGE.format(error=""), status_code=413)
        form = parse_qs(body.decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        record = await keys.find_key(hash_key(key)) if key else None
        expired = (
            record is not None
            and record.expires_at is not None
            and (record.expires_at <= time.time())
        )
        if record is None or record.revoked or expired:
            message = '<p class="error">That key is not a valid hub key.</p>'
            return HTMLResponse(PAGE.format(error=message), status_code=401)
        return signed_in(record.user_did)

    async def link(request: Request) -> Response:
        did = await admin.use_login_link(request.query_params.get("token", ""))
        if did is None:
            message = (
                '<p class="error">This sign-in link is unknown, used or expired: ask for '
                "another.</p>"
            )
            return HTMLResponse(PAGE.format(error=message), status_code=401)
        return signed_in(did)

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return [
        JsonRoute("/login", page, methods=["GET", "POST"]),
        JsonRoute("/login/link", link, methods=["GET"]),
        JsonRoute("/logout", logout, methods=["POST"]),
    ]
