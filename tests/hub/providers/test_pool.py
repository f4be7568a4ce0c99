"""The credential pool: weighted rotation, cool-downs, refused keys, and failover."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest
import respx

from hub.providers.pool import COOLDOWN_SECONDS, MAX_BACKOFF_SECONDS, CredentialPool
from hub.secrets import mask
from hub.settings import ProviderSettings
from tests.conftest import UPSTREAM, Hub, make_settings, start_hub
from tests.hub.test_proxy import completion

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(weights: tuple[int, ...], clock: Clock | None = None) -> CredentialPool:
    keys = [f"sk-key-number-{i}-secret" for i in range(len(weights))]
    return CredentialPool(keys, weights, lambda key: key, clock or Clock())


def test_keys_are_picked_in_proportion_to_their_weights_and_interleaved() -> None:
    credentials = pool((300, 100))
    picks = [credentials.pick().headers for _ in range(400)]  # type: ignore[union-attr]

    assert Counter(picks) == {"sk-key-number-0-secret": 300, "sk-key-number-1-secret": 100}
    assert "sk-key-number-1-secret" in picks[:4]  # smooth: no run of 300 first


def test_a_rate_limited_key_is_cooled_down_for_a_while() -> None:
    clock = Clock()
    credentials = pool((100, 100), clock)
    first = credentials.credentials[0]

    credentials.rate_limited(first)
    cooled = Counter(credentials.pick().headers for _ in range(110))  # type: ignore[union-attr]
    clock.now += COOLDOWN_SECONDS + 1
    recovered = Counter(credentials.pick().headers for _ in range(100))  # type: ignore[union-attr]

    assert cooled[first.headers] == 10  # a tenth of its weight
    assert recovered[first.headers] == 50


def test_a_refused_key_leaves_the_pool_with_a_growing_backoff() -> None:
    clock = Clock()
    credentials = pool((100, 100), clock)
    bad, good = credentials.credentials

    credentials.refused(bad)
    assert {credentials.pick().headers for _ in range(20)} == {good.headers}  # type: ignore[union-attr]
    first_backoff = bad.disabled_until - clock.now
    credentials.refused(bad)
    assert bad.disabled_until - clock.now > first_backoff

    clock.now = bad.disabled_until + 1  # re-checked once the backoff is over
    assert bad.headers in {credentials.pick().headers for _ in range(4)}  # type: ignore[union-attr]


def test_when_every_key_is_refused_one_is_still_tried() -> None:
    credentials = pool((100,))
    credentials.refused(credentials.credentials[0])
    assert credentials.pick() is credentials.credentials[0]
    assert credentials.pick(exclude=credentials.credentials) is None


def test_refusals_can_never_take_the_last_key_out_of_service() -> None:
    # Some refusals a caller can provoke: however many arrive, for whichever keys, one key
    # is always left serving.
    clock = Clock()
    credentials = pool((100, 100, 100), clock)
    for round_ in range(200):
        for credential in credentials.credentials:
            credentials.refused(credential)
            serving = [c for c in credentials.credentials if c.disabled_until <= clock.now]
            assert serving, f"no key left in service after round {round_}"
        clock.now += 1


def test_a_benched_key_is_back_within_the_cap_however_often_it_was_refused() -> None:
    clock = Clock()
    credentials = pool((100, 100), clock)
    bad = credentials.credentials[0]
    for _ in range(5000):  # 2.0 ** 5000 would overflow: the backoff must not
        credentials.refused(bad)

    assert bad.disabled_until - clock.now == MAX_BACKOFF_SECONDS <= 15 * 60
    clock.now = bad.disabled_until
    assert bad in {credentials.pick() for _ in range(4)}


def test_a_key_that_cannot_be_a_header_value_never_joins_the_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, bad = "sk-good-key-00000000001", "sk-bad-key-0000001\r\nX-Evil: 1\r\n"
    credentials = CredentialPool([bad, good], [100, 100], lambda key: key, Clock())
    for _ in range(3):  # stored keys are added again on every reload
        credentials.add("sk-nul-key-00000000\x00x", 100, "sealed")

    assert [c.secret for c in credentials.credentials] == [good]
    assert len([r for r in caplog.records if "cannot be sent" in r.getMessage()]) == 2
    assert "Evil" not in caplog.text and "\r" not in caplog.text


def test_keys_are_shown_masked() -> None:
    assert mask("sk-abcdefghijklmnop") == "sk-a...mnop"
    assert mask("short") == "****"


# -- failover through the hub -------------------------------------------------------

KEYS = ("sk-first-key-0000000001", "sk-second-key-000000002")


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def hub(db_url: str, upstream: respx.MockRouter) -> AsyncIterator[Hub]:
    two_keys = ProviderSettings("mock", "openai", UPSTREAM, KEYS, ("gpt-4o-mini",))
    settings = replace(make_settings(db_url), providers={"mock": two_keys})
    started = await start_hub(settings, httpx.MockTransport(upstream.async_handler))
    yield started
    await started.client.aclose()
    await started.app.shutdown()


def by_key(answers: dict[str, httpx.Response]) -> object:
    def answer(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        return answers[key]

    return answer


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(429, json={"error": {"message": "slow down"}}),
        httpx.Response(503, json={"error": {"message": "overloaded"}}),
        httpx.Response(401, json={"error": {"message": "invalid api key"}}),
    ],
)
async def test_a_failing_key_fails_over_to_the_next(
    hub: Hub, upstream: respx.MockRouter, failure: httpx.Response
) -> None:
    route = upstream.post("/chat/completions").mock(
        side_effect=by_key(
            {
                KEYS[0]: failure,
                KEYS[1]: httpx.Response(200, json=completion()),
            }
        )
    )

    responses = [await hub.chat() for _ in range(4)]

    assert [r.status_code for r in responses] == [200] * 4
    first = (await hub.calls())[-1]  # the oldest
    assert first["status"] == "success" and first["attempts"] == 2
    assert first["credential"] == mask(KEYS[1])
    # The failing key was cooled down or taken out: later calls go straight to the other.
    used = [r.headers["authorization"][-4:] for r in (c.request for c in route.calls)]
    assert used[:2] == [KEYS[0][-4:], KEYS[1][-4:]] and set(used[2:]) == {KEYS[1][-4:]}


async def test_a_connection_failure_fails_over_too(hub: Hub, upstream: respx.MockRouter) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"].endswith(KEYS[0]):
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=completion())

    upstream.post("/chat/completions").mock(side_effect=answer)

    response = await hub.chat()

    assert response.status_code == 200
    [call] = await hub.calls()
    assert call["attempts"] == 2


async def test_when_every_key_fails_the_last_answer_is_passed_on(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(503, json={"error": {"message": "down"}})

    response = await hub.chat()

    assert response.status_code == 503 and "down" in response.json()["error"]["message"]
    [call] = await hub.calls()
    assert call["status"] == "failed" and call["attempts"] == 2 and call["credits"] == 0


async def test_a_bad_request_is_not_retried(hub: Hub, upstream: respx.MockRouter) -> None:
    route = upstream.post("/chat/completions").respond(
        400, json={"error": {"message": "bad messages"}}
    )

    response = await hub.chat()

    assert response.status_code == 400 and route.call_count == 1
    assert json.loads(response.text)["error"]["code"] == "upstream_error"


async def test_a_request_that_timed_out_after_going_out_is_not_sent_again(
    hub: Hub, upstream: respx.MockRouter
) -> None:
    # It may be running (and billed) at the provider: another key would double it.
    route = upstream.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))

    response = await hub.chat()

    assert response.status_code == 504 and route.call_count == 1
    [call] = await hub.calls()
    assert call["attempts"] == 1
