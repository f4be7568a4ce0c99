"""What clients trip on before their first call: `/v1/models` entries that say each
model's type, context length and price, and CORS preflights as the official SDKs' browser
builds send them."""

from __future__ import annotations

import httpx
import pytest
import respx

from middleware.money import to_units
from tests.conftest import UPSTREAM, Hub, make_settings, start_hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio

ORIGIN = "https://chat.example"
# Access-Control-Request-Headers as each SDK's browser build asks (lower-case, sorted, as
# browsers send them).
OPENAI_JS = (
    "authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,"
    "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
    "x-stainless-runtime-version,x-stainless-timeout"
)
ANTHROPIC_JS = (
    "anthropic-dangerous-direct-browser-access,anthropic-version,content-type,x-api-key,"
    "x-stainless-arch,x-stainless-lang,x-stainless-os,x-stainless-package-version,"
    "x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout"
)
GOOGLE_GENAI_JS = "content-type,x-goog-api-client,x-goog-api-key"


async def test_models_say_their_type_context_and_price(hub: Hub) -> None:
    admin = hub.admin
    await admin.set_rate(
        "mock/text-embedding-3-small", "embedding", input_rate=to_units("0.00000002"), output_rate=0
    )
    await admin.set_rate(
        "mock/gpt-image-1", "imageGeneration", input_rate=0, output_rate=0, image_rate=to_units(4)
    )
    listed = {m["id"]: m for m in (await hub.client.get("/v1/models")).json()["data"]}
    chat = listed["mock/gpt-4o-mini"]
    # OpenAI's fields as before, and what tells models apart.
    assert {k: chat[k] for k in ("object", "created", "owned_by")} == {
        "object": "model",
        "created": 0,
        "owned_by": "mock",
    }
    assert (chat["type"], chat["context_length"]) == ("chat", 128_000)
    assert chat["pricing"] == {"prompt": "0.000001", "completion": "0.000002", "image": "0"}
    embedding = listed["mock/text-embedding-3-small"]
    assert (embedding["type"], embedding["context_length"]) == ("embedding", 8_191)
    assert embedding["pricing"]["prompt"] == "0.00000002"
    image = listed["mock/gpt-image-1"]
    assert (image["type"], image["context_length"], image["pricing"]["image"]) == (
        "image",
        None,
        "4",
    )
    # The AIGNE SDK's listing keeps its own shape.
    aigne = (await hub.client.get("/api/ai/models")).json()
    assert {e["model"]: e["type"] for e in aigne}["mock/text-embedding-3-small"] == "embedding"
    assert "pricing" not in aigne[0] and "context_length" not in aigne[0]


@pytest.mark.parametrize("asked", [OPENAI_JS, ANTHROPIC_JS, GOOGLE_GENAI_JS])
async def test_the_sdks_browser_preflights_pass(db_url: str, asked: str) -> None:
    started = await start_hub(make_settings(db_url, cors_origins=(ORIGIN,)), None)
    preflight = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": asked,
    }
    try:
        answered = await started.client.options("/v1/chat/completions", headers=preflight)
        stranger = await started.client.options(
            "/v1/chat/completions", headers={**preflight, "origin": "https://evil.example"}
        )
        extra = await started.client.options(
            "/v1/chat/completions",
            headers={**preflight, "access-control-request-headers": asked + ",x-unheard-of"},
        )
    finally:
        await started.client.aclose()
        await started.app.shutdown()
    assert answered.status_code == 200, answered.text
    assert answered.headers["access-control-allow-origin"] == ORIGIN
    allowed = {
        h.strip().lower() for h in answered.headers["access-control-allow-headers"].split(",")
    }
    assert set(asked.split(",")) <= allowed
    # Still only for the origins configured, and only the headers listed.
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
    assert extra.status_code == 400
    assert stranger.json()["error"]["code"] == "cors_refused"


async def test_a_refused_preflight_is_in_the_paths_own_error_shape(db_url: str) -> None:
    started = await start_hub(make_settings(db_url, cors_origins=(ORIGIN,)), None)
    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    try:
        gemini = await started.client.options("/v1beta/models/m:generateContent", headers=preflight)
    finally:
        await started.client.aclose()
        await started.app.shutdown()
    error = gemini.json()["error"]
    assert (gemini.status_code, error["code"], error["status"]) == (400, 400, "INVALID_ARGUMENT")
    assert error["details"][0]["reason"] == "cors_refused"


async def test_a_cross_origin_gemini_call_gets_its_cors_headers(db_url: str) -> None:
    with respx.mock(base_url=UPSTREAM) as upstream:
        upstream.post("/chat/completions").respond(json=completion())
        settings = make_settings(db_url, cors_origins=(ORIGIN,))
        started = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
        transport = httpx.ASGITransport(app=started.app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as page:
                answered = await page.post(
                    "/v1beta/models/mock/gpt-4o-mini:generateContent",
                    json={"contents": [{"parts": [{"text": "hi"}]}]},
                    headers={"origin": ORIGIN, "x-goog-api-key": started.key},
                )
        finally:
            await started.client.aclose()
            await started.app.shutdown()
    assert answered.status_code == 200, answered.text
    assert answered.headers["access-control-allow-origin"] == ORIGIN
