"""Who is calling: an API key, or a signed session cookie.

The key comes as `Authorization: Bearer` (OpenAI's SDKs, the AIGNE SDK) or in the header
another vendor's SDK puts it in (`x-api-key` for Anthropic's SDKs and Claude Code,
`x-goog-api-key` for google-genai); on Gemini's own routes also as the `key=` query
parameter, as Google's REST examples send it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Collection
from urllib.parse import parse_qs, urlencode

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from middleware.call import IDENTITY_KEY, Identity
from middleware.errors import refuse_websocket, send_error
from middleware.ports import AccountLookup, KeyRecord, KeyStore

KEY_PREFIX = "ahk_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_COOKIE = "aigne_hub_session"
# Headers other SDKs send their key in, besides Authorization: looked up in this order.
KEY_HEADERS = ("x-api-key", "x-goog-api-key")
# Paths where a `key=` query parameter is a key (Gemini's REST API takes it there).
QUERY_KEY_PREFIX = "/v1beta/"


def new_api_key() -> str:
    """A fresh random API key, shown to its owner once."""
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(secret: str) -> str:
    """The stored form of a key.

    Keys carry 240 random bits, so one SHA-256 is enough: a slow hash guards weak
    passwords, and here it would only add latency to every request.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def session_signer(secret: str) -> URLSafeTimedSerializer:
    """What signs and checks session cookies (the login pages sign, this layer checks)."""
    return URLSafeTimedSerializer(secret, salt="aigne-hub-session")


class _KeyCache:
    """Short-lived lookups, so revocation takes effect within `ttl` seconds.

    Unknown keys are remembered apart from real ones, so a flood of made-up keys (which
    needs no credentials) fills and clears only its own table, never evicting real keys.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._known: dict[str, tuple[float, KeyRecord]] = {}
        self._unknown: dict[str, float] = {}

    def get(self, key_hash: str) -> tuple[bool, KeyRecord | None]:
        now = time.monotonic()
        entry = self._known.get(key_hash)
        if entry is not None and entry[0] >= now:
            return True, entry[1]
        expires = self._unknown.get(key_hash)
        if expires is not None and expires >= now:
            return True, None
        return False, None

    def put(self, key_hash: str, record: KeyRecord | None) -> None:
        expires = time.monotonic() + self.ttl
        if record is None:
            if len(self._unknown) >= self.max_entries:
                self._unknown.clear()
            self._unknown[key_hash] = expires
            return
        if len(self._known) >= self.max_entries:
            self._known.clear()
        self._known[key_hash] = (expires, record)


class AuthMiddleware:
    """Sets the request's Identity or answers 401; the request body is never read on failure."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyStore,
        accounts: AccountLookup | None = None,
        session_secret: str | None = None,
        session_max_age: int = 7 * 24 * 3600,
        public_paths: Collection[str] = (),
        cache_seconds: float = 5.0,
        login_path: str | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.accounts = accounts
        self.public_paths = frozenset(public_paths)
        self.cache = _KeyCache(cache_seconds)
        self.session_max_age = session_max_age
        self.sessions = session_signer(session_secret) if session_secret else None
        # Where a person's browser is sent when it asks for a page without a session.
        self.login_path = login_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] in self.public_paths:  # lifespan
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        carried = _carried_key(scope, headers) if authorization is None else None
        identity: Identity | None
        if carried is not None:
            found = await self._from_carried(*carried)
            if isinstance(found, tuple):
                await send_error(send, 401, *found)
                return
            identity = found
        elif authorization is None:
            identity = await self._from_session(headers)
            if identity is None and self._wants_page(scope, headers):
                query = scope.get("query_string", b"").decode("latin-1")
                back = scope["path"] + (f"?{query}" if query else "")
                await _redirect(send, f"{self.login_path}?{urlencode({'next': back})}")
                return
            if (
                identity is None
                and self.sessions is not None
                and session_cookie_of(headers) is not None
            ):
                await send_error(
                    send,
                    401,
                    "invalid_session",
                    "This session has ended (signed out, expired, or its key revoked): "
                    "sign in again.",
                )
                return
            if identity is None:
                await send_error(
                    send,
                    401,
                    "missing_api_key",
                    "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'.",
                )
                return
            if scope["method"] not in SAFE_METHODS and not _is_json(headers):
                # A browser sends the cookie with any form another site makes it post, but
                # only a script of our own origin can send JSON (others need a preflight).
                await send_error(send, 403, "csrf", "Send JSON (content-type: application/json).")
                return
        else:
            identity_or_error = await self._from_authorization(authorization)
            if isinstance(identity_or_error, tuple):
                await send_error(send, 401, *identity_or_error)
                return
            identity = identity_or_error
        scope[IDENTITY_KEY] = identity
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket needs a key like any request: refused before it is accepted. A
        session cookie does not count: a browser sends it with a websocket any other site
        opens, and no preflight or content type stands in the way."""
        if scope["path"] not in self.public_paths:
            authorization = Headers(scope=scope).get("authorization")
            if authorization is None:
                found: Identity | tuple[str, str] = ("missing_api_key", "Missing API key.")
            else:
                found = await self._from_authorization(authorization)
            if isinstance(found, tuple):
                await refuse_websocket(scope, send, 401, *found)
                return
            scope[IDENTITY_KEY] = found
        await self.app(scope, receive, send)

    async def _from_authorization(self, authorization: str) -> Identity | tuple[str, str]:
        """The identity of a Bearer key, or why there is none (error code, message)."""
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and not token:
            return ("missing_api_key", "The Bearer token is empty.")
        if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
            return (
                "malformed_api_key",
                "Malformed Authorization header: expected 'Bearer ahk_...'.",
            )
        return await self._from_key(token)

    async def _from_carried(self, where: str, value: str) -> Identity | tuple[str, str]:
        """The identity of a key sent in another SDK's header (or `key=`), or why none."""
        token = value.strip()
        if not token:
            return ("missing_api_key", f"The {where} is empty.")
        if not token.startswith(KEY_PREFIX):
            return ("malformed_api_key", f"Malformed {where}: expected 'ahk_...'.")
        return await self._from_key(token)

    async def _from_key(self, token: str) -> Identity | tuple[str, str]:
        return await self._from_hash(hash_key(token))

    async def _from_hash(self, key_hash: str) -> Identity | tuple[str, str]:
        hit, record = self.cache.get(key_hash)
        if not hit:
            record = await self.keys.find_key(key_hash)
            self.cache.put(key_hash, record)
        refusal = key_refusal(record)
        if refusal is not None:
            return refusal
        assert record is not None
        self.keys.touch_key(record.key_id)
        return Identity(
            account_id=record.account_id,
            user_did=record.user_did,
            key_id=record.key_id,
            app_did=record.app_did,
            is_admin=record.is_admin,
            models=record.models,
            budgeted=record.budgeted,
        )

    async def _from_session(self, headers: Headers) -> Identity | None:
        if self.sessions is None or self.accounts is None:
            return None
        cookie = _cookie(headers.get("cookie", ""), SESSION_COOKIE)
        if cookie is None:
            return None
        session = read_session(self.sessions, cookie, self.session_max_age)
        if session is None:
            return None
        did, key_hash, epoch = session
        models = None
        if key_hash is not None:
            # A session opened with a key ends when that key is revoked or expires, and may
            # call only the models the key may: pasting a scoped key must not widen it.
            by_key = await self._from_hash(key_hash)
            if isinstance(by_key, tuple) or by_key.user_did != did:
                return None
            models = by_key.models
        found = await self.accounts.find_account(did)
        if found is None or found.session_epoch != epoch:  # signed out since
            return None
        return Identity(
            account_id=found.account_id,
            user_did=did,
            is_admin=found.is_admin,
            via="session",
            models=models,
        )

    def _wants_page(self, scope: Scope, headers: Headers) -> bool:
        return (
            self.login_path is not None
            and scope["method"] == "GET"
            and "text/html" in headers.get("accept", "")
        )

    def session_cookie(self, user_did: str, key_hash: str | None = None, epoch: int = 0) -> str:
        """A signed cookie value that logs `user_did` in (see `session_value`)."""
        if self.sessions is None:
            raise RuntimeError("sessions are not configured: set a session secret")
        return session_value(self.sessions, user_did, key_hash, epoch)


def key_refusal(record: KeyRecord | None) -> tuple[str, str] | None:
    """Why a key may not be used (error code, message), or None when it may."""
    if record is None:
        return ("invalid_api_key", "Invalid API key.")
    if record.revoked:
        return ("revoked_api_key", "This API key has been revoked.")
    if record.expires_at is not None and record.expires_at <= time.time():
        return ("expired_api_key", "This API key has expired.")
    return None


def session_value(
    signer: URLSafeTimedSerializer, user_did: str, key_hash: str | None, epoch: int
) -> str:
    """The signed session: who, the hash of the key they signed in with (the session then
    lasts while the key does; None after a one-time link), and the account's session epoch
    (signing out, an admin's sign-out and an admin revoking any of the person's keys bump
    it, voiding every session signed before: so a link's session, tied to no key, still
    ends when an operator cuts the person off)."""
    return str(signer.dumps([user_did, key_hash, epoch]))


def read_session(
    signer: URLSafeTimedSerializer, cookie: str, max_age: int
) -> tuple[str, str | None, int] | None:
    """(did, key hash, epoch) of a valid, unexpired session cookie, else None."""
    try:
        payload = signer.loads(cookie, max_age=max_age)
    except BadSignature:
        return None
    if not (isinstance(payload, list) and len(payload) == 3):
        return None
    did, key_hash, epoch = payload
    if (
        not isinstance(did, str)
        or not isinstance(key_hash, str | None)
        or not isinstance(epoch, int)
        or isinstance(epoch, bool)
    ):
        return None
    return did, key_hash, epoch


def session_cookie_of(headers: Headers) -> str | None:
    return _cookie(headers.get("cookie", ""), SESSION_COOKIE)


def _is_json(headers: Headers) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _carried_key(scope: Scope, headers: Headers) -> tuple[str, str] | None:
    """(where, value) of a key sent other than as Authorization, or None."""
    for name in KEY_HEADERS:
        value = headers.get(name)
        if value is not None:
            return f"{name} header", value
    if scope["path"].startswith(QUERY_KEY_PREFIX) and b"key=" in scope.get("query_string", b""):
        keys = parse_qs(scope["query_string"].decode("latin-1")).get("key")
        if keys:
            return "key parameter", keys[0]
    return None


_QUERY_KEY = re.compile(r"([?&]key=)[^&\s]*")


class QueryKeyFilter(logging.Filter):
    """Masks a `key=` query parameter in the server's access log lines (uvicorn logs the
    path with its query): a key sent that way must not end up in a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and "key=" in str(args[2]):
            record.args = (*args[:2], _QUERY_KEY.sub(r"\1***", str(args[2])), *args[3:])
        return True


QUERY_KEY_FILTER = QueryKeyFilter()
