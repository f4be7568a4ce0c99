"""The Call middleware: bad JSON, missing fields, oversize bodies and unknown models."""

from __future__ import annotations

import pytest

from tests.conftest import Hub

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
