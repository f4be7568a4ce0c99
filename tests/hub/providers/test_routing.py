"""Model names without a provider: rotation among the providers that serve them, failover."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest
import respx

from hub.settings import ProviderSettings
from tests.conftest import Hub, make_settings, start_hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio

ALPHA, BETA = "http://alpha.test/v1", "http://beta.test/v1"


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def hub(db_url: str, upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    providers = {
        "alpha": ProviderSettings(
            "alpha", "openai", ALPHA, ("sk-alpha-0000000001",), ("shared-model", "alpha-only")
        ),
        "beta": ProviderSettings(
            "beta", "openai", BETA, ("sk-beta-00000000002",), ("shared-model",)
        ),
    }
    settings = replace(make_settings(db_url), providers=providers)
    started = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
    await started.admin.set_rate("shared-model", "chatCompletion", input_rate=1, output_rate=1)
    yield started
    await started.client.aclose()
    await started.app.shutdown()


async def test_a_name_without_a_provider_rotates_among_those_serving_it(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    alpha = upstream.post(f"{ALPHA}/chat/completions").respond(json=completion())
    beta = upstream.post(f"{BETA}/chat/completions").respond(json=completion())

    statuses = [(await hub.chat(model="shared-model")).status_code for _ in range(4)]

    assert statuses == [200] * 4
    assert (alpha.call_count, beta.call_count) == (2, 2)
    sent = [c.request for c in alpha.calls] + [c.request for c in beta.calls]
    assert all(json.loads(r.content)["model"] == "shared-model" for r in sent)
    assert {c["provider"] for c in await hub.calls()} == {"alpha", "beta"}


async def test_a_failing_provider_fails_over_to_the_next(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    upstream.post(f"{ALPHA}/chat/completions").respond(503, json={"error": {"message": "down"}})
    upstream.post(f"{BETA}/chat/completions").respond(json=completion(4, 2))

    responses = [await hub.chat(model="shared-model") for _ in range(2)]

    assert [r.status_code for r in responses] == [200, 200]
    calls = await hub.calls()
    assert {c["provider"] for c in calls} == {"beta"}
    assert max(c["attempts"] for c in calls) == 2  # the one that tried alpha first
    assert all(c["credits"] == 4 + 2 for c in calls)


async def test_a_bad_request_does_not_fail_over(hub: Hub, upstream: respx.MockRouter) -> None:
    alpha = upstream.post(f"{ALPHA}/chat/completions").respond(
        400, json={"error": {"message": "bad messages"}}
    )
    beta = upstream.post(f"{BETA}/chat/completions").respond(
        400, json={"error": {"message": "bad messages"}}
    )

    response = await hub.chat(model="shared-model")

    assert response.status_code == 400
    assert alpha.call_count + beta.call_count == 1


async def test_a_named_provider_is_the_only_one_tried(hub: Hub, upstream: respx.MockRouter) -> None:
    await hub.admin.set_rate("alpha/shared-model", "chatCompletion", input_rate=1, output_rate=1)
    upstream.post(f"{ALPHA}/chat/completions").respond(503, json={"error": {"message": "down"}})
    beta = upstream.post(f"{BETA}/chat/completions").respond(json=completion())

    response = await hub.chat(model="alpha/shared-model")

    assert response.status_code == 503 and not beta.called


async def test_a_name_without_a_provider_needs_a_rate_of_its_own(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    # A provider's rate does not price the bare name: failover could land elsewhere.
    await hub.admin.set_rate("alpha/alpha-only", "chatCompletion", input_rate=7, output_rate=11)
    route = upstream.post(f"{ALPHA}/chat/completions").respond(json=completion(10, 5))

    response = await hub.chat(model="alpha-only")

    assert response.status_code == 400 and not route.called
    assert response.json()["error"]["code"] == "model_not_priced"
