"""Request bodies on the hub's own routes: bounded while read, JSON of the expected shape,
or a clear 4xx (never a 500, never a body held whole past its bound)."""

from __future__ import annotations

import anyio
import pytest

from hub.bodies import MAX_API_BODY
from hub.login import MAX_FORM_BYTES
from tests.asgi_call import Body, call
from tests.conftest import USER, Hub

pytestmark = pytest.mark.anyio
JSON = [(b"content-type", b"application/json")]


@pytest.fixture
async def admin_hub(hub: Hub) -> Hub:
    await hub.admin.ensure_account(USER, is_admin=True)
    await anyio.sleep(0.3)  # key lookups are cached for 0.2 s in these tests
    return hub


def keyed(hub: Hub) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {hub.key}".encode()), *JSON]


WRONG_SHAPES = [
    ("POST", "/api/user/keys", b"null"),
    ("POST", "/api/user/keys", b"1"),
    ("POST", "/api/user/keys", b"[]"),
    ("POST", "/api/admin/keys", b"null"),
    ("POST", "/api/admin/grants", b"null"),
    ("POST", "/api/admin/grants", b'"did:abt:bob"'),
    ("POST", "/api/admin/credentials", b"1"),
    ("PUT", "/api/admin/rates", b"{}"),
    ("PUT", "/api/admin/rates", b"null"),
]


async def test_a_json_body_of_the_wrong_shape_is_a_400(admin_hub: Hub) -> None:
    for method, path, body in WRONG_SHAPES:
        answer = await call(admin_hub.app, method, path, headers=keyed(admin_hub), body=body)
        assert (answer.status, answer.error()["code"]) == (400, "invalid_request"), (path, body)


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_json_is_a_400(admin_hub: Hub, depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    for method, path in [("POST", "/api/user/keys"), ("PUT", "/api/admin/rates")]:
        answer = await call(admin_hub.app, method, path, headers=keyed(admin_hub), body=nested)
        assert (answer.status, answer.error()["code"]) == (400, "invalid_json"), path


async def test_nan_and_infinity_are_not_json(admin_hub: Hub) -> None:
    for amount in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"user": "did:abt:bob", "amount": ' + amount + b"}"
        answer = await call(
            admin_hub.app, "POST", "/api/admin/grants", headers=keyed(admin_hub), body=body
        )
        assert (answer.status, answer.error()["code"]) == (400, "invalid_json")


async def test_an_api_body_past_the_bound_is_refused_while_read(hub: Hub) -> None:
    body = Body(64 * 1024 * 1024)  # sent without a Content-Length, in 64 KiB chunks
    answer = await call(hub.app, "POST", "/api/user/keys", headers=keyed(hub), body=body)

    assert (answer.status, answer.error()["code"]) == (413, "body_too_large")
    assert body.received <= MAX_API_BODY + body.chunk


async def test_a_sign_in_body_past_the_bound_is_refused_while_read(hub: Hub) -> None:
    for path in ("/login", "/logout"):
        body = Body(64 * 1024 * 1024, chunk=1024)
        headers = [(b"content-type", b"application/x-www-form-urlencoded")]
        answer = await call(hub.app, "POST", path, headers=headers, body=body)
        assert body.received <= MAX_FORM_BYTES + body.chunk, path
        if path == "/login":
            assert (answer.status, answer.error()["code"]) == (413, "body_too_large")


async def test_a_declared_length_past_the_bound_is_refused_unread(hub: Hub) -> None:
    body = Body(10 * 1024 * 1024)
    declared = [(b"content-length", str(body.total).encode())]
    answer = await call(hub.app, "POST", "/login", headers=declared, body=body)

    assert (answer.status, answer.error()["code"]) == (413, "body_too_large")
    assert body.received == 0


@pytest.mark.parametrize("origin", [b"http://[", b"http://]", b"http://[::g]"])
async def test_a_malformed_origin_is_a_400_on_sign_in_and_out(hub: Hub, origin: bytes) -> None:
    for path in ("/login", "/logout"):
        answer = await call(hub.app, "POST", path, headers=[(b"origin", origin)], body=b"key=x")
        error = answer.error()
        assert (answer.status, error["code"], error["param"]) == (400, "invalid_header", "origin")


async def test_sign_in_still_works_within_the_bound(hub: Hub) -> None:
    form = f"key={hub.key}&next=/dashboard".encode()
    headers = [
        (b"origin", b"http://hub.test"),
        (b"content-type", b"application/x-www-form-urlencoded"),
    ]
    answer = await call(hub.app, "POST", "/login", headers=headers, body=form)
    assert (answer.status, answer.headers["location"]) == (303, "/dashboard")
