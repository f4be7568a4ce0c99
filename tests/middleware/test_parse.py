"""The Call middleware: bad JSON, missing fields, oversize bodies and unknown models."""

from __future__ import annotations

import pytest
import respx

from tests.conftest import USER, Hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio


async def post_raw(
    hub: Hub, content: bytes, path: str = "/v1/chat/completions"
) -> tuple[int, dict]:
    response = await hub.client.post(
        path, content=content, headers={"content-type": "application/json"}
    )
    return response.status_code, response.json()["error"]


async def test_bad_json_is_a_400(hub: Hub) -> None:
    status, error = await post_raw(hub, b'{"model": "mock/gpt-4o-mini", "messages": [')
    assert status == 400 and error["code"] == "invalid_json"


async def test_json_that_is_not_an_object_is_a_400(hub: Hub) -> None:
    status, error = await post_raw(hub, b'["model"]')
    assert status == 400 and error["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b'{"messages": []}', "model", "missing_field"),
        (b'{"model": "mock/gpt-4o-mini"}', "messages", "missing_field"),
        (b'{"model": 5, "messages": []}', "model", "invalid_field"),
        # Names that would break the call record, a log line or an upstream URL.
        (b'{"model": "mock/a\\u0000b", "messages": []}', "model", "invalid_field"),
        (b'{"model": "mock/\\ud800", "messages": []}', "model", "invalid_field"),
        (b'{"model": "mock/a\\r\\nb", "messages": []}', "model", "invalid_field"),
        (b'{"model": "mock/gpt-4o-mini", "messages": "hi"}', "messages", "invalid_field"),
        (
            b'{"model": "mock/gpt-4o-mini", "messages": [], "stream": "yes"}',
            "stream",
            "invalid_field",
        ),
    ],
)
async def test_the_field_at_fault_is_named(hub: Hub, body: bytes, param: str, code: str) -> None:
    status, error = await post_raw(hub, body)
    assert status == 400 and error["param"] == param and error["code"] == code


async def test_embeddings_need_input(hub: Hub) -> None:
    status, error = await post_raw(hub, b'{"model": "mock/x"}', "/v1/embeddings")
    assert status == 400 and error["param"] == "input"


async def test_oversize_body_is_a_413(hub: Hub) -> None:
    big = b'{"model": "mock/gpt-4o-mini", "messages": [], "pad": "' + b"x" * (5 << 20) + b'"}'
    status, error = await post_raw(hub, big)
    assert status == 413 and error["code"] == "body_too_large"


async def test_oversize_body_without_length_is_a_413(hub: Hub) -> None:
    async def body():  # type: ignore[no-untyped-def]
        for _ in range(6):
            yield b"x" * (1 << 20)

    response = await hub.client.post("/v1/chat/completions", content=body())
    assert response.status_code == 413


async def test_unknown_model_is_a_404_and_not_recorded(hub: Hub) -> None:
    for model in ("nobody/gpt-4o", "gpt-4o", "mock/"):
        status, error = await post_raw(hub, b'{"model": "%s", "messages": []}' % model.encode())
        assert status == 404 and error["code"] == "unknown_model" and error["param"] == "model"
    assert await hub.calls() == []


async def test_deeply_nested_json_is_a_400(hub: Hub) -> None:
    status, error = await post_raw(hub, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and error["code"] == "invalid_json"


@pytest.mark.parametrize("header", ["x-request-id", "x-aigne-hub-client-did"])
async def test_over_long_headers_are_refused_not_left_unrecorded(hub: Hub, header: str) -> None:
    response = await hub.client.post(
        "/v1/chat/completions",
        headers={header: "r" * 201},
        json={"model": "mock/gpt-4o-mini", "messages": []},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_header"
    assert await hub.calls() == []


async def test_over_long_model_names_are_refused(hub: Hub) -> None:
    status, error = await post_raw(hub, b'{"model": "mock/%s", "messages": []}' % (b"m" * 300))
    assert status == 400 and error["param"] == "model"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/images/generations", b'{"model": "mock/img", "prompt": "cat", "stream": true}'),
        ("/v1/embeddings", b'{"model": "mock/emb", "input": "x", "stream": true}'),
    ],
)
async def test_only_chat_can_stream(hub: Hub, path: str, body: bytes) -> None:
    status, error = await post_raw(hub, body, path)
    assert status == 400 and error["param"] == "stream"


async def test_a_key_issued_for_an_app_records_that_app_whatever_the_header_says(
    hub: Hub, mock_upstream: respx.MockRouter
) -> None:
    mock_upstream.post("/chat/completions").respond(json=completion())
    _, app_key = await hub.admin.create_key(USER, app_did="did:app:mine")
    body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    other_app = {"x-aigne-hub-client-did": "did:app:someone-else"}

    with_app = await hub.client.post(
        "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {app_key}", **other_app},
    )
    without_app = await hub.client.post("/v1/chat/completions", json=body, headers=other_app)

    assert with_app.status_code == without_app.status_code == 200
    recorded = {call["app_did"] for call in await hub.calls()}
    assert recorded == {"did:app:mine", "did:app:someone-else"}  # the second key has no app
