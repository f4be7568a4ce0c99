"""Rate limits shared through Redis (127.0.0.1:6379): exact across limiters and hub
processes, leases that come back after a crash, and a Redis that is down.

Each test writes under a key prefix of its own, removed at its end. Without a reachable
Redis these tests are skipped, except on CI (CI=true), where they must run."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
import respx

from examples.fake_provider import FakeProvider
from hub.limits_redis import RedisLimiter
from hub.settings import RedisSettings
from middleware.limits import LimitPolicy
from middleware.ports import Bucket, Quota
from tests.conftest import LiveServer, make_settings, start_hub
from tests.hub.test_proxy import completion
from tests.hub.test_workers import _config, _free_port, _grant_key, _running

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("AIGNE_HUB_TEST_REDIS", "redis://127.0.0.1:6379/0")
MODEL = "fake/gpt-4o-mini"


def _redis_reachable() -> bool:
    try:
        return bool(sync_redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except sync_redis.RedisError:
        return False


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own in a reachable Redis, emptied at the end."""
    if not _redis_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL}, and CI needs these tests")
        pytest.skip(f"Redis is not reachable at {REDIS_URL} (start one to run these tests)")
    name = f"aigne-hub-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = sync_redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)


@pytest.fixture
async def limiters(prefix: str) -> AsyncIterator[list[RedisLimiter]]:
    """Four limiters on one Redis, as four hub processes have; an hour-long window, so no
    window ends during a test."""
    # A generous timeout: on a loaded machine, opening a burst of connections can take a
    # while, and these tests are about exact counts, not about failing open.
    made = [
        RedisLimiter(REDIS_URL, prefix=prefix, window_seconds=3600, timeout=5) for _ in range(4)
    ]
    yield made
    for limiter in made:
        await limiter.aclose()


async def test_rpm_is_exact_across_four_limiters_racing(limiters: list[RedisLimiter]) -> None:
    buckets = (Bucket("key:k1", Quota(rpm=60)), Bucket("model:m", Quota(rpm=1000)))
    answers = await asyncio.gather(
        *(limiters[i % 4].admit(f"call-{i}", buckets, 10) for i in range(300))
    )
    assert sum(a.admitted for a in answers) == 60
    refused = [a for a in answers if not a.admitted]
    assert {(a.refused_bucket, a.refused_limit) for a in refused} == {(0, "requests")}
    # A refused call took from no counter: the model's count is the admitted calls alone.
    last = await limiters[0].admit("one-more", (buckets[1],), 0)
    assert last.counts[0].requests == 61


async def test_tokens_corrected_and_concurrency_given_back(limiters: list[RedisLimiter]) -> None:
    limiter = limiters[0]
    buckets = (Bucket("account:1", Quota(tpm=1000, concurrent=1)),)
    first = await limiter.admit("c1", buckets, 600)
    assert first.admitted and first.counts[0].tokens == 600
    busy = await limiters[1].admit("c2", buckets, 10)
    assert not busy.admitted and busy.refused_limit == "concurrent"
    limiter.release("c1", buckets, first.window, -590)  # it used 10 of its 600
    await asyncio.wait(limiter._background)
    second = await limiters[1].admit("c2", buckets, 900)
    assert second.admitted and second.counts[0].tokens == 910


async def test_a_crashed_processs_slots_come_back_when_their_leases_end(prefix: str) -> None:
    crashed = RedisLimiter(REDIS_URL, prefix=prefix, lease_seconds=1, timeout=5)
    alive = RedisLimiter(REDIS_URL, prefix=prefix, lease_seconds=1, timeout=5)
    buckets = (Bucket("key:k", Quota(concurrent=2)),)
    try:
        assert (await crashed.admit("a", buckets, 0)).admitted
        assert (await crashed.admit("b", buckets, 0)).admitted
        # The process dies: nothing is released, nothing renewed.
        assert crashed._renewer is not None
        crashed._renewer.cancel()
        assert not (await alive.admit("c", buckets, 0)).admitted
        await asyncio.sleep(1.2)
        assert (await alive.admit("c", buckets, 0)).admitted
    finally:
        await crashed.aclose()
        await alive.aclose()


async def test_a_running_calls_lease_is_renewed(prefix: str) -> None:
    limiter = RedisLimiter(REDIS_URL, prefix=prefix, lease_seconds=2, timeout=5)
    other = RedisLimiter(REDIS_URL, prefix=prefix, lease_seconds=2, timeout=5)
    buckets = (Bucket("key:k", Quota(concurrent=1)),)
    try:
        taken = await limiter.admit("long", buckets, 0)
        await asyncio.sleep(3)  # past its first expiry: renewed meanwhile
        assert not (await other.admit("x", buckets, 0)).admitted
        limiter.release("long", buckets, taken.window, 0)
        await asyncio.wait(limiter._background)
        assert (await other.admit("x", buckets, 0)).admitted
    finally:
        await limiter.aclose()
        await other.aclose()


def _away_from_a_minute_edge(seconds_needed: float) -> None:
    """Wait, if need be, until the current minute has this long left: limits count per
    fixed minute, and a test must not straddle two."""
    left = 60 - time.time() % 60
    if left < seconds_needed:
        time.sleep(left + 0.2)


async def test_through_the_hub_on_redis(prefix: str, db_url: str) -> None:
    policy = LimitPolicy(key=Quota(rpm=2))
    redis = RedisSettings(url=REDIS_URL, prefix=prefix, timeout=5)
    with respx.mock(base_url="http://upstream.test/v1") as upstream:
        upstream.post("/chat/completions").respond(json=completion())
        hub = await start_hub(
            make_settings(db_url, rate_limits=policy, redis=redis),
            httpx.MockTransport(upstream.async_handler),
        )
        try:
            _away_from_a_minute_edge(5)
            answers = [await hub.chat() for _ in range(3)]
        finally:
            await hub.client.aclose()
            await hub.app.shutdown()
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "1"
    assert answers[2].json()["error"]["code"] == "rate_limited"
    assert 0 < int(answers[2].headers["retry-after"]) <= 60


@pytest.mark.parametrize("on_error", ["open", "closed"])
async def test_redis_down_fails_as_configured_never_a_500(
    db_url: str, on_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    policy = LimitPolicy(key=Quota(rpm=1))
    # Nothing listens on port 1: every connection is refused.
    redis = RedisSettings(url="redis://127.0.0.1:1/0", on_error=on_error)  # type: ignore[arg-type]
    with respx.mock(base_url="http://upstream.test/v1", assert_all_called=False) as upstream:
        upstream.post("/chat/completions").respond(json=completion())
        hub = await start_hub(
            make_settings(db_url, rate_limits=policy, redis=redis),
            httpx.MockTransport(upstream.async_handler),
        )
        try:
            answers = [await hub.chat() for _ in range(3)]
            metrics = (await hub.client.get("/metrics")).text
        finally:
            await hub.client.aclose()
            await hub.app.shutdown()
    expected = 200 if on_error == "open" else 503
    assert [a.status_code for a in answers] == [expected] * 3
    if on_error == "closed":
        assert answers[0].json()["error"]["code"] == "rate_limiter_unavailable"
    assert "aigne_hub_rate_limiter_errors_total 3" in metrics
    # Said once, not once a call.
    said = [r for r in caplog.records if "rate limiter cannot be reached" in r.getMessage()]
    assert len(said) == 1


@pytest.mark.slow
def test_rpm_60_with_300_racing_calls_over_four_hub_processes(prefix: str, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    ports = [_free_port() for _ in range(4)]
    with LiveServer(FakeProvider()) as upstream, ExitStack() as hubs:
        config = _config(tmp_path, db_url, upstream.url)
        with config.open("a") as more:
            more.write(f'[rate_limits]\nkey = {{ rpm = 60 }}\n[redis]\nurl = "{REDIS_URL}"\n')
            more.write(f'prefix = "{prefix}"\ntimeout = 5\non_error = "closed"\n')
        for i, port in enumerate(ports):
            command = [sys.executable, "-m", "hub.cli", "serve", "--config", str(config)]
            command += ["--port", str(port), "--log-level", "warning"]
            hubs.enter_context(_running(command, {}, port, tmp_path / f"hub{i}.log"))
        key = asyncio.run(_grant_key(db_url))
        _away_from_a_minute_edge(30)
        statuses = asyncio.run(_race(ports, key, 300))
    # Closed on a Redis error (none expected): a call the limiter did not count is a 503,
    # never an uncounted 200.
    assert statuses.count(200) == 60, statuses
    assert statuses.count(429) == 240


async def _race(ports: list[int], key: str, count: int) -> list[int]:
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(64)

        async def one(i: int) -> int:
            async with gate:
                answer = await client.post(
                    f"http://127.0.0.1:{ports[i % 4]}/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                )
                return answer.status_code

        return list(await asyncio.gather(*(one(i) for i in range(count))))
