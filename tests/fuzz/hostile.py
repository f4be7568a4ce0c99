"""Hypothesis strategies for hostile requests: every route's own fields with right and wrong
values, JSON that Python parses but databases and headers refuse, and bytes that are not
JSON at all; odd paths, queries and headers around them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
AUTHS = ("admin", "user", "admin-cookie", "user-cookie", "none", "garbage")
PRICED = ("mock/gpt-4o-mini", "mock/text-embedding-3-small", "mock/dall-e-3")
USERS = ("did:abt:fuzz-user", "did:abt:fuzz-admin", "did:abt:bob")

# What each route reads from a JSON body; other routes get all of these, mixed.
RATE_FIELDS = ("model", "type", "input", "output", "cached", "cache_write", "image", "per")
CALL_FIELDS = (
    *("model", "messages", "stream", "input", "prompt", "n", "size", "quality", "user"),
    *("stream_options", "max_tokens", "tools", "response_format", "service_tier", "models"),
)
AIGNE_FIELDS = ("input", "options", "model", "prompt", "outputFileType")
RESPONSES_FIELDS = (
    *("model", "input", "instructions", "stream", "tools", "tool_choice", "text", "reasoning"),
    *("max_output_tokens", "previous_response_id", "store", "include", "metadata", "user"),
)
GEMINI_FIELDS = (
    *("contents", "systemInstruction", "generationConfig", "tools", "toolConfig"),
    *("safetySettings", "cachedContent", "generateContentRequest", "model"),
)
# Gemini's routes: the model in the path, `{model}` filled with a priced one.
GEMINI_ROUTES = (
    "/v1beta/models/{model}:generateContent",
    "/v1beta/models/{model}:streamGenerateContent",
    "/v1beta/models/{model:path}:countTokens",
)
FIELDS: dict[str, tuple[str, ...]] = {
    "/api/admin/keys": ("user", "admin", "name", "app", "expires_days"),
    "/api/user/keys": ("name", "app", "expires_days"),
    "/api/admin/grants": ("user", "amount", "note"),
    "/api/admin/rates": RATE_FIELDS,
    "/api/admin/credentials": ("provider", "key", "weight"),
    "/api/v2/chat": AIGNE_FIELDS,
    "/api/v2/image": AIGNE_FIELDS,
    "/v1/responses": RESPONSES_FIELDS,
    **dict.fromkeys(GEMINI_ROUTES, GEMINI_FIELDS),
    "/login": ("key", "next"),
}
QUERY_NAMES = (
    *("limit", "offset", "user", "model", "type", "since", "until", "group", "by"),
    *("format", "window", "page", "status", "app", "request_id", "next", "token"),
)


@dataclass(frozen=True)
class Raw:
    """A JSON token written as it is: numbers Python reads as inf, NaN or bigints."""

    text: str


@dataclass(frozen=True)
class Deep:
    """`inner` wrapped in `depth` lists: the nesting that exhausts a recursive parser."""

    depth: int
    inner: Any


def dump(value: Any) -> str:
    """JSON text of a generated value; strings are escaped, so lone surrogates become
    `\\ud800` escapes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Deep):
        return "[" * value.depth + dump(value.inner) + "]" * value.depth
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


# -- values -------------------------------------------------------------------------------

ODD_TEXT = (
    *("", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "a\r\nb", "\r\n", "\t", "٣", "²", "１２"),
    *("𝕏", "null", "NaN", "-1", "1e999", "'; DROP TABLE accounts;--", "=1+1", "../../etc"),
    *("%00", "%zz", "did:abt:bob", "ahk_" + "0" * 40, "<script>", "ü" * 201),
)
NUMBERS = (
    *("0", "-0", "1", "-1", "0.5", "1e308", "-1e308", "1e999", "-1e999", "NaN", "Infinity"),
    *("-Infinity", "2147483647", "2147483648", "9223372036854775807", "9223372036854775808"),
    *("-9223372036854775809", "922337203.6854775807", "1e-11", "0.00000000001", "1e8"),
    *("123456789012345678901234567890", "1.0000000000000000001", "36500", "36501"),
)
# Amounts a validator might take: every magnitude from one unit to past what 64 bits hold.
MONEY_EDGE = (
    *("1", "2.5", "0.0000000001", "100", "1e7", "99999999", "1e8", "5e8", "922337203"),
    *("922337203.6854775807", "922337204", "1e20", "1e300", "-5", "0"),
)
MONEY_TEXT = (
    *("0.00000000001", "NaN", "Infinity", "1e-20", "١", "  1 ", "0x10", "1_000", "", "9" * 40),
    *("-0", "1e999"),
)
texts = st.one_of(
    st.sampled_from(ODD_TEXT),
    st.text(max_size=12),
    st.builds(
        lambda piece, times: piece * times,
        st.text(min_size=1, max_size=3),
        st.sampled_from((100, 1000, 70_000)),
    ),
)
numbers = st.one_of(
    st.sampled_from(NUMBERS).map(Raw),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
hostile = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(CALL_FIELDS), texts), inner, max_size=4),
    ),
    max_leaves=12,
) | st.builds(Deep, st.sampled_from((50, 999, 1000, 1200, 5000)), leaves)

edge_money = st.sampled_from(MONEY_EDGE) | st.sampled_from(MONEY_EDGE).map(Raw)
money = st.one_of(edge_money, edge_money, st.sampled_from(MONEY_TEXT), numbers)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(("user", "system", "assistant", "tool", "agent", "")) | texts},
        optional={"content": texts | st.lists(hostile, max_size=2) | hostile},
    ),
    max_size=3,
)
RIGHT: dict[str, st.SearchStrategy[Any]] = {
    "user": st.sampled_from(USERS) | texts.map(lambda t: "did:abt:" + t),
    "admin": st.booleans(),
    "amount": money,
    "model": st.sampled_from((*PRICED, "gpt-4o-mini", "other/x", "mock/")) | texts,
    "type": st.sampled_from(("chatCompletion", "embedding", "imageGeneration")),
    "per": st.sampled_from(("token", "million")),
    "weight": st.integers(-(2**70), 2**70) | st.sampled_from((1, 100, 2**31, 2**63)),
    "expires_days": numbers,
    "provider": st.just("mock"),
    "key": st.sampled_from(("sk-fine", "sk-a\r\nb", "sk-\x00", "sk-\u00e9", "sk-\ud800")),
    "messages": messages,
    "stream": st.booleans(),
    "input": money | texts | st.lists(texts, max_size=3),
    "output": money,
    "cached": money,
    "cache_write": money,
    "image": money,
    "prompt": texts,
    "n": numbers,
    "options": st.fixed_dictionaries({}, optional={"streaming": st.booleans()}),
}


def field_value(name: str) -> st.SearchStrategy[Any]:
    right = RIGHT.get(name, texts)
    return st.one_of(right, right, hostile)


def json_object(fields: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={name: field_value(name) for name in fields})


def aigne_body() -> st.SearchStrategy[dict[str, Any]]:
    """The AIGNE SDK's shape: the call inside `input`, the model in its modelOptions."""
    model_options = st.fixed_dictionaries(
        {}, optional={"model": RIGHT["model"], "maxTokens": numbers}
    )
    given = st.fixed_dictionaries(
        {},
        optional={
            "messages": messages | hostile,
            "modelOptions": model_options | hostile,
            "prompt": texts,
        },
    )
    return st.fixed_dictionaries({"input": given | hostile}, optional={"options": RIGHT["options"]})


def pct(text: str) -> str:
    """Percent-encoded UTF-8, a lone surrogate as the bytes a careless client would send."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


# -- bodies -------------------------------------------------------------------------------


def encoded(text: str, as_ascii: bool) -> bytes:
    """JSON text as bytes: escaped ASCII, or raw UTF-8 in which a lone surrogate becomes
    bytes that are not UTF-8 at all."""
    if as_ascii:
        return text.encode("ascii", "backslashreplace")
    return text.encode("utf-8", "surrogatepass")


def json_body(value: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(lambda v, a: encoded(dump(v), a), value, st.booleans())


def bodies(route: str) -> st.SearchStrategy[bytes]:
    fields = FIELDS.get(route) or tuple(
        dict.fromkeys(
            (
                *CALL_FIELDS,
                *RATE_FIELDS,
                "user",
                "amount",
                "key",
                "weight",
                "name",
                "app",
                "expires_days",
            )
        )
    )
    obj = aigne_body() if route in ("/api/v2/chat", "/api/v2/image") else json_object(fields)
    form = st.builds(
        lambda key, nxt: f"key={pct(key)}&next={pct(nxt)}".encode(),
        texts | st.just("ahk_nope"),
        texts | st.sampled_from(("/dashboard", "//evil.example", "/\\evil")),
    )
    return st.one_of(
        st.just(b""),
        json_body(obj),
        json_body(obj),
        json_body(obj),
        json_body(st.lists(obj, max_size=3)),
        json_body(hostile),
        st.sampled_from(
            (b"null", b"1", b"true", b'"x"', b"[]", b"{}", b"{", b"[" * 1200, b"\xff\xfe")
        ),
        st.binary(max_size=40),
        form,
        st.integers(4, 70).map(
            lambda kib: b'{"model":"mock/gpt-4o-mini","x":"' + b"x" * (kib * 1024) + b'"}'
        ),
        st.just(b"[" * 4_200_000),  # past the 4 MiB body limit
    )


# -- plausible bodies: what a client that means well sends, its values still at the edges --

words = st.sampled_from(("Say hi", "hello", "٣ apples", "数字", "a" * 2000, "x\r\ny", "\ud800"))
good_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(("user", "system")), "content": words}),
    min_size=1,
    max_size=3,
)
CHAT, EMBEDDING, IMAGE = PRICED
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "chatCompletion": st.fixed_dictionaries(
        {"model": st.sampled_from((CHAT, CHAT, CHAT, "mock/unpriced")), "messages": good_messages},
        optional={
            "stream": st.booleans(),
            "max_tokens": st.sampled_from((1, 100, 2**31, 10**12)),
            "stream_options": st.just({"include_usage": True}),
            "service_tier": st.just("priority"),
        },
    ),
    "embedding": st.fixed_dictionaries(
        {"model": st.sampled_from((EMBEDDING, CHAT)), "input": words | st.lists(words, max_size=3)}
    ),
    "imageGeneration": st.fixed_dictionaries(
        {"model": st.sampled_from((IMAGE, CHAT)), "prompt": words},
        optional={"n": st.sampled_from((1, 2, 10**6)), "size": st.sampled_from(("1024x1024", "x"))},
    ),
    "/api/v2/chat": st.fixed_dictionaries(
        {
            "input": st.fixed_dictionaries(
                {"messages": good_messages, "modelOptions": st.just({"model": CHAT})}
            )
        },
        optional={"options": st.fixed_dictionaries({"streaming": st.booleans()})},
    ),
    "/api/v2/image": st.fixed_dictionaries(
        {
            "input": st.fixed_dictionaries(
                {"prompt": words, "modelOptions": st.just({"model": IMAGE})}
            )
        }
    ),
    "/v1/responses": st.fixed_dictionaries(
        {
            "model": st.sampled_from((CHAT, CHAT, "mock/unpriced")),
            "input": words
            | st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(("user", "developer")), "content": words}
                ),
                min_size=1,
                max_size=3,
            ),
        },
        optional={
            "stream": st.booleans(),
            "instructions": words,
            "max_output_tokens": st.sampled_from((1, 100, 2**31, 10**12)),
            "previous_response_id": st.just("resp_earlier"),
            "tools": st.just([{"type": "web_search"}]),
            "service_tier": st.just("priority"),
        },
    ),
    **dict.fromkeys(
        GEMINI_ROUTES,
        st.fixed_dictionaries(
            {
                "contents": st.lists(
                    st.fixed_dictionaries(
                        {
                            "role": st.just("user"),
                            "parts": st.lists(st.fixed_dictionaries({"text": words}), min_size=1),
                        }
                    ),
                    min_size=1,
                    max_size=2,
                )
            },
            optional={
                "systemInstruction": st.fixed_dictionaries({"parts": st.just([{"text": "Hi"}])}),
                "generationConfig": st.fixed_dictionaries(
                    {},
                    optional={
                        "maxOutputTokens": st.sampled_from((1, 100, 2**31, 10**12)),
                        "temperature": st.sampled_from((0, 0.5, 2)),
                        "topK": st.just(3),
                    },
                ),
                "safetySettings": st.just([{"category": "X", "threshold": "BLOCK_NONE"}]),
            },
        ),
    ),
    "/api/admin/grants": st.fixed_dictionaries(
        {"user": st.sampled_from(USERS), "amount": edge_money}, optional={"note": texts}
    ),
    "/api/admin/keys": st.fixed_dictionaries(
        {"user": st.sampled_from(USERS) | RIGHT["user"]},
        optional={"name": texts, "app": texts, "expires_days": numbers, "admin": st.just(False)},
    ),
    "/api/user/keys": st.fixed_dictionaries(
        {}, optional={"name": texts, "app": texts, "expires_days": numbers}
    ),
    "/api/admin/rates": st.lists(
        st.fixed_dictionaries(
            {
                "model": st.sampled_from((*PRICED, "mock/new")),
                "input": edge_money,
                "output": edge_money,
            },
            optional={
                "per": st.sampled_from(("token", "million")),
                "type": RIGHT["type"],
                "cached": edge_money,
                "image": edge_money,
            },
        ),
        min_size=1,
        max_size=2,
    ),
    "/api/admin/credentials": st.fixed_dictionaries(
        {"provider": st.just("mock"), "key": RIGHT["key"]}, optional={"weight": RIGHT["weight"]}
    ),
}


def plausible_bodies(route: str, call_type: str | None) -> st.SearchStrategy[bytes]:
    """The body a well-meaning client sends to the route; none where the route reads none."""
    shape = PLAUSIBLE.get(route)
    if shape is None and call_type is not None:
        shape = PLAUSIBLE.get(call_type)
    return st.just(b"") if shape is None else json_body(shape)
