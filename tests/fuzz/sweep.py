"""Requests made in order, not drawn: a tour of every route and method as the admin uses
them, and a sweep of every field of every JSON body through its edge values, the others
valid. Hypothesis draws a few choices far more often than the rest; these make sure that
each known edge is sent at least once."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from hub.routes import MODEL_ROUTES
from middleware.parse import Route as CallRoute
from tests.fuzz.asgi import Request
from tests.fuzz.hostile import (
    CHAT,
    EMBEDDING,
    GEMINI_ROUTES,
    IMAGE,
    MONEY_EDGE,
    MONEY_TEXT,
    NUMBERS,
    ODD_TEXT,
    Deep,
    Raw,
    dump,
    encoded,
)

JSON = ((b"content-type", b"application/json"),)
BROWSER = ((b"content-type", b"application/x-www-form-urlencoded"), (b"accept", b"text/html"))
_CHAT = {"messages": [{"role": "user", "content": "Say hi"}]}
# A valid body for each route that reads one (by call type for the model routes).
BASE: dict[str, Any] = {
    "chatCompletion": {"model": CHAT, **_CHAT},
    "embedding": {"model": EMBEDDING, "input": "hello"},
    "imageGeneration": {"model": IMAGE, "prompt": "a cat"},
    "/api/v2/chat": {"input": {**_CHAT, "modelOptions": {"model": CHAT}}},
    "/api/v2/image": {"input": {"prompt": "a cat", "modelOptions": {"model": IMAGE}}},
    "/v1/responses": {"model": CHAT, "input": "Say hi"},
    **dict.fromkeys(GEMINI_ROUTES, {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
    "/api/admin/grants": {"user": "did:abt:bob", "amount": "1", "note": "sweep"},
    "/api/admin/keys": {"user": "did:abt:bob", "name": "k", "app": "a", "expires_days": 1},
    "/api/user/keys": {"name": "sweep", "app": "a", "expires_days": 1},
    "/api/admin/rates": [{"model": CHAT, "input": "0.000001", "output": "0.000002"}],
    "/api/admin/credentials": {"provider": "mock", "key": "sk-sweep", "weight": 1},
}
SHAPES: tuple[Any, ...] = (None, [], {}, True, Deep(1200, 1))
MONEY = (*MONEY_EDGE, *map(Raw, MONEY_EDGE), *MONEY_TEXT)
EDGES: dict[str, tuple[Any, ...]] = {
    **dict.fromkeys(("amount", "input", "output", "cached", "cache_write", "image"), MONEY),
    **dict.fromkeys(("weight", "expires_days", "n", "max_tokens"), tuple(map(Raw, NUMBERS))),
    **dict.fromkeys(("admin", "stream"), (False, "true", 1)),
    "per": ("token", "million", "MILLION", "year"),
    "type": ("chatCompletion", "embedding", "imageGeneration", "chat"),
    "messages": ([], [{"role": "user"}], [{"role": "user", "content": ["x"]}], ["hi"]),
}


def base_body(template: str) -> Any:
    spec = MODEL_ROUTES.get(template)
    call_type = spec.call_type if isinstance(spec, CallRoute) else spec
    return BASE.get(template, BASE.get(call_type or ""))


def tour(
    routes: Sequence[tuple[str, frozenset[str]]],
    ids: Sequence[str],
    login_keys: Sequence[str],
    link_tokens: Sequence[str],
) -> list[Request]:
    """Each route with each of its methods, once, as the admin would use it: so that every
    handler is reached whatever the generated requests happen to draw."""
    visits = []
    for template, methods in routes:
        body = base_body(template)
        path = template.replace("{path}", "hub.css").replace("{unknown}", "/nope")
        path = re.sub(r"\{[\w:]+\}", CHAT if template in GEMINI_ROUTES else ids[0], path)
        query = f"token={link_tokens[0]}" if template == "/login/link" else ""
        if template.endswith(":streamGenerateContent"):
            query = "alt=sse"
        for method in sorted(methods - {"HEAD"}) or ["GET"]:
            raw = json.dumps(body).encode() if body is not None and method != "GET" else b""
            headers: tuple[tuple[bytes, bytes], ...] = JSON
            if template == "/login":
                raw, headers = f"key={login_keys[0]}&next=/".encode(), BROWSER
            if method == "DELETE" and template == "/api/admin/rates":
                query = "model=mock/none"
            visits.append(_request(method, path, query, headers, raw, template))
    return visits


def sweep(routes: Sequence[tuple[str, frozenset[str]]]) -> list[Request]:
    """Each field of each route's body set, one at a time, to each of its edge values."""
    visits = []
    for template, methods in routes:
        base = base_body(template)
        method = next((m for m in ("POST", "PUT") if m in methods), None)
        if base is None or method is None:
            continue
        entry = base[0] if isinstance(base, list) else base
        for name in entry:
            for value in (*EDGES.get(name, ODD_TEXT), *SHAPES):
                changed = {**entry, name: value}
                body = [changed] if isinstance(base, list) else changed
                raw = encoded(dump(body), as_ascii=True)
                auth = "user" if template.startswith("/api/user/") else "admin"
                visits.append(_request(method, template, "", JSON, raw, template, auth))
    return visits


def price_sweep() -> list[Request]:
    """A model priced at each edge rate, then called, plain and streamed: every charge the
    rates allow must be written (or the rate refused), never left unsettled."""
    model = "mock/sweep-rate"
    visits = []
    # Dearest first: once a charge has taken the balance below zero, calls are refused.
    for rate in sorted(MONEY_EDGE, key=float, reverse=True):
        entry = [{"model": model, "input": rate, "output": rate}]
        visits.append(
            _request("PUT", "/api/admin/rates", "", JSON, dump(entry).encode(), "/api/admin/rates")
        )
        for stream in (False, True):
            call = dump({"model": model, **_CHAT, "stream": stream}).encode()
            path = "/v1/chat/completions"
            visits.append(_request("POST", path, "", JSON, call, path))
    return visits


def _request(
    method: str,
    path: str,
    query: str,
    headers: tuple[tuple[bytes, bytes], ...],
    body: bytes,
    template: str,
    auth: str = "admin",
) -> Request:
    length = (b"content-length", str(len(body)).encode())
    return Request(method, path.encode(), query.encode(), (*headers, length), body, template, auth)
