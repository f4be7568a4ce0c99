"""Whole requests: a route's path (its parameters odd or real), a query, headers, a body
and a caller; half of them hostile throughout, half plausible with hostile values."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from hub.routes import MODEL_ROUTES
from middleware.parse import Route as CallRoute
from tests.fuzz.asgi import Request
from tests.fuzz.hostile import (
    AUTHS,
    CHAT,
    FIELDS,
    GEMINI_ROUTES,
    METHODS,
    QUERY_NAMES,
    bodies,
    pct,
    plausible_bodies,
    texts,
)
from tests.fuzz.sweep import BROWSER, JSON

ODD_SEGMENTS = (
    *("%zz", "%", "%00", "..", "%2e%2e", "%2F", "a%2Fb", "%ff", "%ed%a0%80", "%0d%0a", "~"),
    *("x" * 300, "nope"),
)
STATIC_FILES = (
    *("hub.css", "hub.js", "playground.js", "nope.css", "../pyproject.toml", "", "hub.css/"),
    *("%2e%2e/%2e%2e/pyproject.toml", "%00"),
)
UNKNOWN_PATHS = (
    *("/nope", "/api/admin/nope", "/v1/chat/completions/x", "/api", "/v1", "//"),
    *("/dashboard/", "/api/v2/status/", "/%zz", "/%00", "/static"),
)
QUERY_VALUES = (
    *("", "-1", "0", "99999999999999999999", "1e999", "nan", "١٢", "%zz", "%", "%00", "%ff"),
    *("csv", "json", "hour", "total", "mock/gpt-4o-mini", "success", "30d", "did:abt:bob"),
)
# Header values a server passes on: any byte but controls (h11 refuses CR, LF and NUL).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=20
)
HEADER_CHOICES: dict[str, tuple[str, ...]] = {
    "content-type": (
        *("application/json", "application/json; charset=utf-8", "APPLICATION/JSON", ""),
        *("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"),
    ),
    "origin": (
        *("http://hub.test", "http://[", "null", "https://app.example", "http://evil.example"),
        *("http://hub.test:99999", "://"),
    ),
    "x-aigne-hub-client-did": ("did:abt:app", "x" * 300, "did:abt:\xff"),
    "x-request-id": ("req-1", "x" * 300, "\xff\xfe"),
    "accept": ("text/html", "application/json", "*/*", "text/event-stream"),
    "host": ("hub.test", "evil.example", "[", "a b", "", "hub.test:80", "hub.test:99999"),
    "cookie": ("aigne_hub_session=garbage", "aigne_hub_session=", ";;;=", "aigne_hub_session=a.b"),
    "range": ("bytes=5-1", "bytes=abc", "bytes=0-0,1-1,2-2", "bytes=-0", "bytes=9999999999999-"),
    "authorization": (
        *("Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer ahk_", "bearer ahk_x y"),
        *("Bearer \xff", "Token ahk_x", "Bearer ahk_" + "x" * 5000),
    ),
    "if-none-match": ('"x"', "*", "W/"),
    "if-modified-since": ("garbage", "Wed, 21 Oct 2015 07:28:00 GMT"),
    "access-control-request-method": ("POST", "DELETE", "\xff"),
    "access-control-request-headers": ("content-type", "x-evil", ","),
}


def segment(ids: Sequence[str]) -> st.SearchStrategy[str]:
    """A path segment, percent-encoded as on the wire."""
    return st.one_of(
        st.sampled_from(tuple(ids) or ("none",)), st.sampled_from(ODD_SEGMENTS), texts.map(pct)
    )


def paths(template: str, ids: Sequence[str]) -> st.SearchStrategy[str]:
    if template == "/static/{path}":
        names = st.sampled_from(STATIC_FILES) | segment(())
        return names.map(lambda name: "/static/" + name)
    if template == "{unknown}":
        return st.sampled_from(UNKNOWN_PATHS) | segment(()).map(lambda s: "/" + s)
    if "{" not in template:
        return st.just(template)
    head, _, rest = template.partition("{")
    return segment(ids).map(lambda s: head + s + rest.partition("}")[2])


def plausible_paths(template: str, ids: Sequence[str]) -> st.SearchStrategy[str]:
    if template in GEMINI_ROUTES:  # the model is in the path: mostly a priced one
        head, _, rest = template.partition("{")
        models = st.sampled_from((CHAT, CHAT, CHAT, "mock/unpriced", *ids[:1]))
        return models.map(lambda m: head + m + rest.partition("}")[2])
    if "{" in template and template not in ("/static/{path}", "{unknown}"):
        head, _, rest = template.partition("{")
        return st.sampled_from(tuple(ids)).map(lambda s: head + s + rest.partition("}")[2])
    return paths(template, ids)


queries = st.lists(
    st.tuples(
        st.sampled_from((*QUERY_NAMES, "", "%zz", "a[]")),
        st.sampled_from(QUERY_VALUES) | texts.map(pct),
    ),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode())
# Bytes past ASCII as they are, which a browser would percent-encode but a server passes on.
queries = queries | st.sampled_from((b"user=\xff", b"model=\xc3\xa9", b"\xed\xa0\x80=1"))


def header_sets() -> st.SearchStrategy[tuple[tuple[bytes, bytes], ...]]:
    def header(name: str, values: tuple[str, ...]) -> st.SearchStrategy[tuple[bytes, bytes]]:
        return (st.sampled_from(values) | header_text).map(
            lambda v: (name.encode(), v.encode("latin-1"))
        )

    # Each header mostly absent, else one of its odd values, else any text.
    chosen = [st.none() | st.none() | header(n, v) for n, v in HEADER_CHOICES.items()]
    return st.tuples(*chosen).map(lambda got: tuple(p for p in got if p is not None))


def plan(
    routes: Sequence[tuple[str, frozenset[str]]],
    ids: Sequence[str],
    login_keys: Sequence[str],
    link_tokens: Sequence[str],
) -> list[tuple[st.SearchStrategy[Request], int]]:
    """For each route (template, its methods), hostile requests and plausible ones, each
    with its share of the requests: a route that takes JSON has most to get wrong.

    One Hypothesis run per strategy rather than one over them all: its draws favour the
    first of many choices, and requests would pile up on a few routes."""

    def request(
        template: str,
        method: str,
        path: str,
        query: bytes,
        head: tuple[tuple[bytes, bytes], ...],
        body: bytes,
        sized: bool,
        auth: str,
    ) -> Request:
        # Without a length, a body arrives as a chunked upload does.
        length = ((b"content-length", str(len(body)).encode()),) if sized else ()
        return Request(method, path.encode("ascii"), query, (*head, *length), body, template, auth)

    def hostile(template: str, own: frozenset[str]) -> st.SearchStrategy[Request]:
        return st.builds(
            request,
            st.just(template),
            st.sampled_from(sorted(own) or METHODS) | st.sampled_from(METHODS),
            paths(template, ids),
            queries,
            header_sets(),
            bodies(template),
            st.booleans(),
            st.sampled_from(AUTHS),
        )

    def plausible(template: str, own: frozenset[str]) -> st.SearchStrategy[Request]:
        spec = MODEL_ROUTES.get(template)
        call_type = spec.call_type if isinstance(spec, CallRoute) else spec
        body = plausible_bodies(template, call_type)
        if template == "/login":
            body = st.sampled_from(tuple(login_keys)).map(lambda k: f"key={k}&next=/".encode())
        # The odd parts of a plausible request are in its body; rarely in its query or headers.
        query = st.sampled_from((b"",) * 4) | queries
        if template.endswith(":streamGenerateContent"):
            query = st.sampled_from((b"alt=sse",) * 4) | query
        if template == "/login/link":
            tokens = st.sampled_from(tuple(link_tokens))
            query = tokens.map(lambda t: f"token={t}&next=/dashboard".encode()) | query
        # The methods that send a body first: Hypothesis draws the first choice most.
        methods = sorted(own - {"HEAD"}, key=lambda m: (m not in ("POST", "PUT"), m)) or ["GET"]
        return st.builds(
            request,
            st.just(template),
            st.sampled_from(methods),
            plausible_paths(template, ids),
            query,
            st.sampled_from((JSON, JSON, JSON, (), BROWSER))
            | header_sets().map(lambda h: (*JSON, *h)),
            body,
            st.just(True),
            # The admin's routes mostly by the admin, so that their handlers are reached.
            st.sampled_from(("admin", "admin-cookie", "admin", "user", "user-cookie")),
        )

    def share(template: str) -> int:
        if template in FIELDS and template != "/login":
            return 6  # the admin and user APIs: money, keys, rates, provider keys
        return 3 if template in MODEL_ROUTES or template == "/login" else 1

    return [
        (kind(template, own), share(template))
        for template, own in routes
        for kind in (hostile, plausible)
    ]
