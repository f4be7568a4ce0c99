"""The rate-limit middleware and the in-process limiter alone: a turned clock, no sleeps,
a five-line app behind them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from middleware.call import CALL_KEY, Call, Identity, Usage
from middleware.limiter_memory import MemoryLimiter
from middleware.limits import LimitPolicy, RateLimitMiddleware, duration_text, reserved_tokens
from middleware.ports import Bucket, LimiterUnavailable, Quota

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float = 6_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _call(key: str | None = "key_a", account: int = 1, model: str = "m/x", **body: Any) -> Call:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    raw = json.dumps(body).encode()
    return Call(Identity(account, "did:abt:u", key_id=key), "chatCompletion", model, body, raw)


class Answered:
    """What the app behind the middleware saw, and what went back to the client."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.reached = 0


def _stack(
    policy: LimitPolicy,
    limiter: Any,
    *,
    usage: Usage | None = None,
    raise_inside: bool = False,
    **options: Any,
) -> tuple[RateLimitMiddleware, Answered]:
    seen = Answered()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.reached += 1
        if raise_inside:
            raise RuntimeError("boom")
        scope[CALL_KEY].usage = usage
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return RateLimitMiddleware(app, limiter=limiter, policy=policy, **options), seen


async def _send(middleware: RateLimitMiddleware, seen: Answered, call: Call) -> Answered:
    answer = Answered()
    answer.reached = seen.reached

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            answer.body += message.get("body", b"")

    await middleware({"type": "http", CALL_KEY: call}, receive, send)
    answer.reached = seen.reached - answer.reached
    return answer


async def test_requests_per_minute_exact_then_back_in_the_next_minute() -> None:
    clock = Clock(6_000_000.0 + 15)  # 15 s into a minute
    limiter = MemoryLimiter(clock=clock)
    middleware, seen = _stack(LimitPolicy(key=Quota(rpm=3)), limiter)
    statuses = [(await _send(middleware, seen, _call())).status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]

    refused = await _send(middleware, seen, _call())
    assert refused.reached == 0  # nothing behind the limit saw it
    error = json.loads(refused.body)["error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
    assert "3 requests per minute" in error["message"]
    assert refused.headers["retry-after"] == "45"
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "45s"

    clock.now += 45  # the next minute
    again = await _send(middleware, seen, _call())
    assert again.status == 200
    assert again.headers["x-ratelimit-remaining-requests"] == "2"


async def test_each_key_has_its_own_count_and_the_account_shares_one() -> None:
    limiter = MemoryLimiter(clock=Clock())
    policy = LimitPolicy(key=Quota(rpm=2), account=Quota(rpm=3))
    middleware, seen = _stack(policy, limiter)
    a = [(await _send(middleware, seen, _call("key_a"))).status for _ in range(3)]
    b = [(await _send(middleware, seen, _call("key_b"))).status for _ in range(2)]
    other_account = await _send(middleware, seen, _call("key_c", account=2))
    assert a == [200, 200, 429]
    assert b == [200, 429]  # the account's third call; key_b had room, the account did not
    assert other_account.status == 200
    # A refused call takes from no counter: key_b may still make two once the account can.


async def test_tokens_reserved_from_the_estimate_and_corrected_by_the_usage() -> None:
    limiter = MemoryLimiter(clock=Clock())
    # Each call asks for 400 output tokens: its reservation is a little over 400.
    middleware, seen = _stack(
        LimitPolicy(account=Quota(tpm=1000)), limiter, usage=Usage(input_tokens=5, output_tokens=5)
    )
    first = await _send(middleware, seen, _call(max_tokens=400))
    reserved = reserved_tokens(_call(max_tokens=400), 4096)
    assert 400 < reserved < 500
    assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - reserved)
    # Corrected at the end to the 10 tokens used: the next call sees them, not the estimate.
    second = await _send(middleware, seen, _call(max_tokens=400))
    assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - 10 - reserved)
    assert second.headers["x-ratelimit-limit-tokens"] == "1000"


async def test_a_call_larger_than_the_token_limit_is_told_why() -> None:
    middleware, seen = _stack(LimitPolicy(key=Quota(tpm=100)), MemoryLimiter(clock=Clock()))
    refused = await _send(middleware, seen, _call(max_tokens=5000))
    assert refused.status == 429
    assert "lower max_tokens" in json.loads(refused.body)["error"]["message"]


async def test_concurrency_slot_comes_back_on_every_way_out() -> None:
    limiter = MemoryLimiter(clock=Clock())
    policy = LimitPolicy(key=Quota(concurrent=1))
    middleware, seen = _stack(policy, limiter, raise_inside=True)
    with pytest.raises(RuntimeError):
        await _send(middleware, seen, _call())
    assert limiter.in_flight("key:key_a") == 0
    middleware, seen = _stack(policy, limiter)
    assert (await _send(middleware, seen, _call())).status == 200
    assert limiter.in_flight("key:key_a") == 0


async def test_concurrency_refused_while_a_call_runs() -> None:
    limiter = MemoryLimiter(clock=Clock())
    held = Bucket("key:key_a", Quota(concurrent=1))
    taken = await limiter.admit("c1", (held,), 0)
    assert taken.admitted
    refused = await limiter.admit("c2", (held,), 0)
    assert not refused.admitted and refused.refused_limit == "concurrent"
    limiter.release("c1", (held,), taken.window, 0)
    assert (await limiter.admit("c3", (held,), 0)).admitted


async def test_overrides_replace_the_defaults_and_zero_lifts_a_limit() -> None:
    class Overrides:
        async def limit_overrides(self) -> tuple[dict[str, Quota], dict[int, Quota]]:
            return {"key_a": Quota(rpm=1), "key_b": Quota(rpm=0)}, {}

    middleware, seen = _stack(
        LimitPolicy(key=Quota(rpm=2)), MemoryLimiter(clock=Clock()), overrides=Overrides()
    )
    assert [(await _send(middleware, seen, _call("key_a"))).status for _ in range(2)] == [
        200,
        429,
    ]
    unlimited = [(await _send(middleware, seen, _call("key_b"))).status for _ in range(5)]
    assert unlimited == [200] * 5
    assert (await _send(middleware, seen, _call("key_c"))).headers[
        "x-ratelimit-limit-requests"
    ] == "2"


async def test_model_quota_counts_each_model_alone() -> None:
    limiter = MemoryLimiter(clock=Clock())
    middleware, seen = _stack(LimitPolicy(model=Quota(rpm=1)), limiter)
    assert (await _send(middleware, seen, _call(model="m/x"))).status == 200
    assert (await _send(middleware, seen, _call(model="m/y"))).status == 200
    assert (await _send(middleware, seen, _call("key_b", 2, model="m/x"))).status == 429


async def test_a_call_no_limit_applies_to_passes_without_headers() -> None:
    limiter = MemoryLimiter(clock=Clock())
    middleware, seen = _stack(LimitPolicy(models={"m/x": Quota(rpm=1)}), limiter)
    other = await _send(middleware, seen, _call(model="m/z"))
    assert other.status == 200 and other.reached == 1
    assert not any(h.startswith("x-ratelimit") for h in other.headers)


class Down:
    async def admit(self, *args: Any) -> Any:
        raise LimiterUnavailable("connection refused")

    def release(self, *args: Any) -> None:
        raise AssertionError("nothing was taken")


async def test_limiter_down_fails_open_or_closed_and_is_counted() -> None:
    failures: list[int] = []
    policy = LimitPolicy(key=Quota(rpm=1))
    middleware, seen = _stack(policy, Down(), on_unavailable=lambda: failures.append(1))
    assert [(await _send(middleware, seen, _call())).status for _ in range(3)] == [200] * 3
    middleware, seen = _stack(
        policy, Down(), fail_open=False, on_unavailable=lambda: failures.append(1)
    )
    closed = await _send(middleware, seen, _call())
    assert closed.status == 503 and closed.reached == 0
    assert json.loads(closed.body)["error"]["code"] == "rate_limiter_unavailable"
    assert closed.headers["retry-after"] == "1"
    assert len(failures) == 4


def test_reset_durations_as_openai_writes_them() -> None:
    assert duration_text(0.012) == "12ms"
    assert duration_text(1.5) == "1.5s"
    assert duration_text(45) == "45s"
    assert duration_text(360) == "6m0s"
