"""Every answer from every route, with or without a key, is a clear 4xx in the hub's JSON
shape, and an exception nothing handled is one JSON 500 and one log line."""

from __future__ import annotations

import logging
import re

import anyio
import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from starlette.types import Receive, Scope, Send

from hub.proxy import Proxy
from hub.routes import PUBLIC_PATHS
from hub.store.admin import Admin
from middleware.auth import SESSION_COOKIE
from tests.asgi_call import call
from tests.conftest import USER, Hub, make_settings, start_hub

pytestmark = pytest.mark.anyio


def error_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/json", response.text
    error: dict[str, str] = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


async def test_static_file_errors_are_json(hub: Hub) -> None:
    missing = await hub.client.get("/static/nope.css")
    posted = await hub.client.post("/static/hub.css")
    too_long = await hub.client.get("/static/" + "a" * 5000 + ".css")
    found = await hub.client.get("/static/hub.css")

    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert posted.status_code == 405 and error_of(posted)["code"] == "method_not_allowed"
    assert posted.headers["allow"] == "GET, HEAD"
    assert too_long.status_code == 404 and error_of(too_long)["code"] == "not_found"
    assert found.status_code == 200 and "css" in found.headers["content-type"]


async def test_static_files_are_served_whole_whatever_range_is_asked(hub: Hub) -> None:
    # Starlette answers a bad or unsatisfiable Range itself, in plain text; the assets are
    # small, so the hub ignores Range and sends them whole.
    whole = await hub.client.get("/static/hub.css")
    for asked in ("bytes=5-1", "bytes=abc", "bytes=999999-", "bytes=0-3"):
        answer = await hub.client.get("/static/hub.css", headers={"range": asked})
        assert answer.status_code == 200, asked
        assert answer.content == whole.content


async def test_unknown_routes_and_methods_are_json(hub: Hub) -> None:
    unknown = await hub.client.get("/no/such/route")
    odd_method = await hub.client.request("FROB", "/health")
    wrong_method = await hub.client.delete("/api/user/balance")

    assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"
    for response in (odd_method, wrong_method):
        assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "GET, HEAD"


async def test_a_refused_cors_preflight_is_json(db_url: str) -> None:
    hub = await start_hub(make_settings(db_url, cors_origins=("https://chat.example",)), None)
    try:
        refused = await hub.client.options(
            "/v1/chat/completions",
            headers={"origin": "https://evil.example", "access-control-request-method": "PUT"},
        )
    finally:
        await hub.client.aclose()
        await hub.app.shutdown()

    assert refused.status_code == 400 and error_of(refused)["code"] == "cors_refused"
    assert "origin, method" in error_of(refused)["message"]


async def test_a_query_string_of_raw_bytes_is_a_400_on_every_page(hub: Hub) -> None:
    key = [(b"authorization", f"Bearer {hub.key}".encode())]
    for path in ("/dashboard", "/dashboard/calls", "/playground", "/api/user/calls"):
        answer = await call(hub.app, "GET", path, query=b"model=\xff\xfe", headers=key)
        assert (answer.status, answer.error()["code"]) == (400, "invalid_request"), path


def hub_log_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("aigne_hub")]


async def test_an_unhandled_exception_is_a_json_500_and_one_log_line(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Admin) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(Admin, "list_rates", broken)
    caplog.set_level(logging.INFO)
    named = await hub.client.get("/api/ai/models", headers={"x-request-id": "req-42"})
    unnamed = await hub.client.get("/api/ai/models", headers={"x-request-id": "bad\x7fid"})

    assert named.status_code == 500 and error_of(named)["code"] == "internal_error"
    assert named.headers["x-request-id"] == "req-42" and "req-42" in error_of(named)["message"]
    # A request id the client sent that cannot go into a header or a log line is replaced.
    assert re.fullmatch(r"[0-9a-f]{32}", unnamed.headers["x-request-id"])
    first, second = hub_log_lines(caplog)
    assert first.levelno == logging.ERROR and first.exc_info is None  # no traceback
    assert "KeyError" in first.message and "req-42" in first.message
    assert "GET" in first.message and "/api/ai/models" in first.message
    assert unnamed.headers["x-request-id"] in second.message


async def test_a_traceback_is_logged_at_debug_only(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Admin) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(Admin, "list_rates", broken)
    caplog.set_level(logging.DEBUG, logger="aigne_hub")
    await hub.client.get("/api/ai/models")
    assert any(r.exc_info and r.levelno == logging.DEBUG for r in hub_log_lines(caplog))


async def test_a_model_call_that_raises_answers_with_its_request_id(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Proxy, scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug in the proxy")

    monkeypatch.setattr(Proxy, "__call__", broken)
    caplog.set_level(logging.INFO)
    body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    response = await hub.client.post(
        "/v1/chat/completions", headers={"x-request-id": "call-7"}, json=body
    )
    odd_id = await hub.client.post(
        "/v1/chat/completions", headers={"x-request-id": "call 8; forged"}, json=body
    )

    assert response.status_code == 500 and error_of(response)["code"] == "internal_error"
    assert response.headers["x-request-id"] == "call-7"
    assert re.fullmatch(r"[0-9a-f]{32}", odd_id.headers["x-request-id"])
    line, _ = [r for r in hub_log_lines(caplog) if r.levelno >= logging.WARNING]
    assert "RuntimeError" in line.message and "call-7" in line.message and not line.exc_info
    records = await hub.calls()
    assert {(r["status"], r["error_code"]) for r in records} == {("failed", "internal_error")}


async def test_an_exception_after_the_answer_started_ends_it_with_one_log_line(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def half_answer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("a bug mid-answer")

    monkeypatch.setattr(hub.app, "entry", half_answer)
    caplog.set_level(logging.INFO)
    response = await hub.client.get("/health")  # raised into the test before the fix

    assert (response.status_code, response.content) == (200, b"part")
    [line] = hub_log_lines(caplog)
    assert line.levelno == logging.ERROR and "ValueError" in line.message and not line.exc_info


def _forged_session() -> str:
    signed = URLSafeTimedSerializer("another-secret", salt="aigne-hub-session").dumps(
        ["x", None, 0]
    )
    return f"{SESSION_COOKIE}={signed}"


# Inputs that need no key: each sent to every route reachable without one.
ODD_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FROB")
ODD_QUERIES = (
    b"next=%00",
    b"token=\x00",
    b"token=%zz&next=%ff%fe&type=%",
    b"next=\xff\xfe&type=json",
    b"token=" + b"A" * 20_000,
)
ODD_HEADERS: tuple[list[tuple[bytes, bytes]], ...] = (
    [(b"origin", b"http://[")],
    [(b"origin", b"http://\xef\xbc\x83example")],
    [(b"origin", b"null")],
    [(b"host", b"[")],
    [(b"host", b"hub.test:99999")],
    [(b"host", b"h\xffb")],
    [(b"host", b"")],
    [(b"cookie", b"aigne_hub_session=garbage; other")],
    [(b"cookie", _forged_session().encode())],
    [(b"cookie", b"aigne_hub_session=" + b"x." * 50_000)],
    [(b"content-type", b"application/json; charset=\xff")],
    [(b"content-type", b"multipart/form-data; boundary=")],
    [(b"content-length", b"-1")],
    [(b"authorization", b"Bearer \xff\xfe")],
    [(b"x-request-id", b"\r\nforged: yes")],
)
OPEN_PATHS = sorted({*PUBLIC_PATHS, "/", "/static/hub.css", "/no/such/route", "/v1/models"})


async def test_no_route_reachable_without_a_key_answers_5xx(hub: Hub) -> None:
    tried: list[tuple[str, str, bytes, list[tuple[bytes, bytes]]]] = []
    for path in OPEN_PATHS:
        tried += [(method, path, b"", []) for method in ODD_METHODS]
        for method in ("GET", "POST"):
            tried += [(method, path, query, []) for query in ODD_QUERIES]
            tried += [(method, path, b"", headers) for headers in ODD_HEADERS]
    failures = []
    for method, path, query, headers in tried:
        answer = await call(hub.app, method, path, query=query, headers=headers, body=b"key=x")
        is_page = answer.headers.get("content-type", "").startswith("text/html")
        if answer.status >= 500 or (answer.status >= 400 and not is_page and not _json(answer)):
            failures.append((method, path, query[:40], headers, answer.status, answer.body[:200]))
    assert failures == []


def _json(answer: object) -> bool:
    try:
        answer.error()  # type: ignore[attr-defined]
    except (AssertionError, ValueError, KeyError):
        return False
    return True


async def test_head_only_reads(hub: Hub) -> None:
    """Starlette answers HEAD wherever GET is allowed: it may not take the POST branch."""
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    before = await hub.admin.ledger(USER)
    grant = await hub.client.request(
        "HEAD", "/api/admin/grants", json={"user": USER, "amount": "1000"}
    )
    sign_in = await hub.client.request(
        "HEAD", "/login", content=f"key={hub.key}".encode(), headers={"authorization": ""}
    )

    assert grant.status_code == 200 and await hub.admin.ledger(USER) == before
    assert sign_in.status_code == 200 and "set-cookie" not in sign_in.headers
