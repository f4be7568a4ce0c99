"""Signing people in to the dashboard: a one-time link, or a key pasted into a form.

Both end in the same signed session cookie (HttpOnly, SameSite=Lax), which the auth
middleware reads; programs keep using Bearer keys.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs, urlsplit

from itsdangerous import URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hub.bodies import read_body
from hub.json_route import JsonRoute
from hub.store.admin import Admin
from middleware.auth import (
    SESSION_COOKIE,
    hash_key,
    key_refusal,
    read_session,
    session_cookie_of,
    session_value,
)
from middleware.errors import HubError
from middleware.ports import KeyStore

MAX_FORM_BYTES = 4096  # a key and a path back (or a link's token)

# The sign-in pages' only style, inline so that they need nothing behind the sign-in; the
# Content-Security-Policy (hub/page_headers.py) allows exactly this text by its hash.
PAGE_STYLE = (
    "body{margin:0;background:#f6f7f9;color:#1c2024;font:14px system-ui,sans-serif}"
    "header{background:#111827;color:#fff;padding:.7rem 1.5rem;font-weight:700}"
    "main{max-width:26rem;margin:3rem auto;background:#fff;border:1px solid #e4e7ec;"
    "border-radius:8px;padding:1.2rem 1.5rem}h1{font-size:1.3rem;margin:.2rem 0 .8rem}"
    "label{display:block;font-size:.85rem;color:#667085;margin-top:.8rem}"
    "input{width:100%;box-sizing:border-box;padding:.5rem;margin:.3rem 0 .8rem;font:inherit;"
    "border:1px solid #d0d5dd;border-radius:6px}button{padding:.5rem 1.1rem;font:inherit;"
    "color:#fff;background:#3d7eff;border:0;border-radius:6px;cursor:pointer}"
    ".error{color:#d92d20}"
)
PAGE_TOP = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · AIGNE Hub</title><link rel="icon" href="data:,">
<style>{PAGE_STYLE}</style></head><body><header>AIGNE Hub</header><main>
<h1>Sign in</h1>"""
PAGE_END = "</main></body></html>"
KEY_FORM = """<p>With one of your API keys, or a one-time link from
<code>aigne-hub admin login-link</code>.</p>{error}
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<label for="key">API key</label><input id="key" name="key" type="password"
placeholder="ahk_..." autocomplete="off" autofocus required><button>Sign in</button></form>"""
# Opening a link only shows this; the button's POST spends it, so a mail scanner or a chat
# app's link preview that fetches the link cannot use it up (or sign itself in).
LINK_FORM = """<p>This one-time link signs you in to this hub's dashboard. It works once.</p>
{error}<form method="post" action="/login/link"><input type="hidden" name="token"
value="{token}"><input type="hidden" name="next" value="{next}"><button autofocus>Sign in
</button></form>"""


def routes(
    admin: Admin,
    keys: KeyStore,
    signer: URLSafeTimedSerializer,
    max_age: int,
    *,
    public_url: str | None = None,
) -> list[JsonRoute]:
    """The sign-in routes. `public_url`, when configured, is where people reach the hub:
    an https one makes the cookie Secure even where the hub itself sees plain http, and
    its host counts as this hub's own origin even where a proxy rewrites Host."""
    https_only = public_url is not None and public_url.startswith("https://")
    own_hosts = frozenset({urlsplit(public_url).netloc} if public_url else ())

    async def signed_in(
        request: Request, did: str, key_hash: str | None, next_path: str
    ) -> Response:
        account = await admin.store.find_account(did)
        epoch = account.session_epoch if account is not None else 0
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_value(signer, did, key_hash, epoch),
            max_age=max_age,
            httponly=True,
            samesite="lax",
            # Behind TLS, never sent in clear (a trusted proxy's X-Forwarded-Proto counts).
            secure=https_only or request.url.scheme == "https",
            path="/",
        )
        return response

    async def page(request: Request) -> Response:
        if request.method != "POST":  # GET, or HEAD (which Starlette adds to GET)
            return form(_next(request.query_params.get("next")))
        if not _same_origin(request, own_hosts):
            # Another site could otherwise sign a visitor in as someone else (login CSRF).
            return form("/", '<p class="error">Sign in from this hub\'s own page.</p>', 403)
        fields = await _form_fields(request)
        key = (fields.get("key") or [""])[0].strip()
        next_path = _next((fields.get("next") or [""])[0])
        record_hash = hash_key(key)
        record = await keys.find_key(record_hash) if key else None
        if record is None or key_refusal(record) is not None:
            message = '<p class="error">That key is not a valid hub key.</p>'
            return form(next_path, message, status_code=401)
        return await signed_in(request, record.user_did, record_hash, next_path)

    async def link(request: Request) -> Response:
        if request.method != "POST":  # GET or HEAD: shows the button only (see LINK_FORM)
            params = request.query_params
            return link_form(params.get("token", ""), _next(params.get("next")))
        if not _same_origin(request, own_hosts):
            # Another site could post its own link and sign a visitor in as its owner.
            refused = '<p class="error">Sign in from this hub\'s own page.</p>'
            return link_form("", error=refused, status_code=403)
        fields = await _form_fields(request)
        did = await admin.use_login_link((fields.get("token") or [""])[0])
        if did is None:
            message = (
                '<p class="error">This sign-in link is unknown, used or expired: ask for '
                "another.</p>"
            )
            return form("/", message, status_code=401)
        return await signed_in(request, did, None, _next((fields.get("next") or [""])[0]))

    async def logout(request: Request) -> Response:
        if not _same_origin(request, own_hosts):
            return form("/", '<p class="error">Sign out from this hub\'s own page.</p>', 403)
        cookie = session_cookie_of(request.headers)
        session = read_session(signer, cookie, max_age) if cookie else None
        if session is not None and await _still_valid(keys, session):
            did, _, epoch = session
            # Every session of this person ends, here and on other devices: a copied
            # cookie stops working too.
            await admin.end_sessions(did, epoch)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return [
        JsonRoute("/login", page, methods=["GET", "POST"]),
        JsonRoute("/login/link", link, methods=["GET", "POST"]),
        JsonRoute("/logout", logout, methods=["POST"]),
    ]


def form(next_path: str, error: str = "", status_code: int = 200) -> Response:
    """The sign-in page: paste a key."""
    content = KEY_FORM.format(error=error, next=html.escape(next_path))
    return HTMLResponse(PAGE_TOP + content + PAGE_END, status_code=status_code)


def link_form(
    token: str, next_path: str = "/", status_code: int = 200, error: str = ""
) -> Response:
    """The page a one-time link opens: a button whose POST spends the link."""
    content = LINK_FORM.format(error=error, token=html.escape(token), next=html.escape(next_path))
    # The token is in this page and its address: nothing on the way may keep a copy.
    return HTMLResponse(
        PAGE_TOP + content + PAGE_END,
        status_code=status_code,
        headers={"cache-control": "no-store"},
    )


def _next(path: str | None) -> str:
    """Where to go after signing in: a path on this hub only (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def _still_valid(keys: KeyStore, session: tuple[str, str | None, int]) -> bool:
    """A session opened with a key that is revoked, expired or not the person's is over
    already: it may not sign its owner out of their other sessions."""
    did, key_hash, _ = session
    if key_hash is None:
        return True
    record = await keys.find_key(key_hash)
    return record is not None and key_refusal(record) is None and record.user_did == did


def _same_origin(request: Request, own_hosts: frozenset[str]) -> bool:
    """Whether a form post came from a page of this hub (the host it was asked for, or
    the configured public URL's). Browsers send Origin with every POST; a request without
    it is not from a browser form, so not forged by another site."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    try:
        host = urlsplit(origin).netloc
    except ValueError as exc:  # e.g. `http://[`: no browser sends that
        raise HubError(400, "invalid_header", "The Origin header is not a URL.", "origin") from exc
    # The host only: behind a proxy that ends TLS, the hub sees http where the browser has
    # https.
    return host == request.headers.get("host") or host in own_hosts


async def _form_fields(request: Request) -> dict[str, list[str]]:
    """A urlencoded form of a field or two, parsed here rather than with python-multipart.
    A public route: the body is refused (413) as soon as it passes the bound, unread."""
    body = await read_body(request, MAX_FORM_BYTES)
    return parse_qs(body.decode("utf-8", "replace"))
