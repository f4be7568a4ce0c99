"""The rate limiter shared by every process and host of a hub: counters and leases in Redis.

Each admission is one round trip: a Lua script (EVALSHA) that reads every counter of the
call, and only if all have room takes from them all, atomically. The window is Redis's
own clock, so hosts whose clocks disagree still share one minute. Requests and tokens are
a hash per scope (window number, requests, tokens) that expires after two minutes; calls
at once are a sorted set of leases scored by their expiry, renewed while the call runs,
so the slots of a process that dies come back within LEASE_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from middleware.limiter_memory import WINDOW_SECONDS
from middleware.ports import Admission, Bucket, Count, LimiterUnavailable

logger = logging.getLogger("aigne_hub.limits")

LEASE_SECONDS = 60
# After a failure, Redis is not asked again for this long: calls meanwhile fail open or
# closed at once, instead of each waiting for its own timeout.
DOWN_SECONDS = 1.0
LOG_SECONDS = 60.0
_NO_LIMIT = -1
_KINDS = {1: "requests", 2: "tokens", 3: "concurrent"}

# KEYS: per bucket, its counter hash and its lease set. ARGV: lease, tokens, lease seconds,
# window seconds, then per bucket rpm, tpm and concurrent (-1: no such limit).
_ADMIT = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) + tonumber(now_t[2]) / 1000000
local span = tonumber(ARGV[4])
local window = math.floor(now / span)
local reset_ms = math.ceil(((window + 1) * span - now) * 1000)
local lease, tokens, lease_s = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 2
local counts = {}
local refused_at, refused_kind = 0, 0
for i = 1, n do
  local rpm, tpm, conc = tonumber(ARGV[2 + 3*i]), tonumber(ARGV[3 + 3*i]), tonumber(ARGV[4 + 3*i])
  local found = redis.call('HMGET', KEYS[2*i - 1], 'w', 'r', 't')
  local r, t = 0, 0
  if tonumber(found[1]) == window then
    r, t = tonumber(found[2]) or 0, tonumber(found[3]) or 0
  end
  counts[2*i - 1], counts[2*i] = r, t
  if refused_at == 0 then
    if rpm >= 0 and r + 1 > rpm then
      refused_at, refused_kind = i, 1
    elseif tpm >= 0 and t + tokens > tpm then
      refused_at, refused_kind = i, 2
    elseif conc >= 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[2*i], '-inf', now)
      if redis.call('ZCARD', KEYS[2*i]) >= conc then refused_at, refused_kind = i, 3 end
    end
  end
end
if refused_at == 0 then
  for i = 1, n do
    counts[2*i - 1], counts[2*i] = counts[2*i - 1] + 1, counts[2*i] + tokens
    redis.call('HSET', KEYS[2*i - 1], 'w', window, 'r', counts[2*i - 1], 't', counts[2*i])
    redis.call('EXPIRE', KEYS[2*i - 1], 2 * span)
    if tonumber(ARGV[4 + 3*i]) >= 0 then
      redis.call('ZADD', KEYS[2*i], now + lease_s, lease)
      redis.call('EXPIRE', KEYS[2*i], 2 * lease_s)
    end
  end
end
return {refused_at == 0 and 1 or 0, refused_at, refused_kind, reset_ms, window, unpack(counts)}
"""

# KEYS as for _ADMIT. ARGV: lease, window, token change, then per bucket: whether it counts
# tokens, whether it leases ("1" or "0").
_RELEASE = """
local lease, window, change = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, #KEYS / 2 do
  if ARGV[2 + 2*i] == '1' and change ~= 0 then
    if tonumber(redis.call('HGET', KEYS[2*i - 1], 'w')) == window then
      if redis.call('HINCRBY', KEYS[2*i - 1], 't', change) < 0 then
        redis.call('HSET', KEYS[2*i - 1], 't', 0)
      end
    end
  end
  if ARGV[3 + 2*i] == '1' then redis.call('ZREM', KEYS[2*i], lease) end
end
return 1
"""

# KEYS: lease sets; ARGV: lease seconds, then the lease to renew in each set.
_RENEW = """
local now_t = redis.call('TIME')
local until_ = tonumber(now_t[1]) + tonumber(now_t[2]) / 1000000 + tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', until_, ARGV[1 + i])
  redis.call('EXPIRE', KEYS[i], 2 * tonumber(ARGV[1]))
end
return 1
"""


def _limit(value: int | None) -> int:
    return _NO_LIMIT if value is None else value


class RedisLimiter:
    """Implements middleware.ports.RateLimiter on Redis (redis-py's asyncio client)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "aigne-hub",
        timeout: float = 0.5,
        # Called when a release or a renewal fails (a lease then runs out by itself).
        on_error: Callable[[], None] | None = None,
        window_seconds: int = WINDOW_SECONDS,
        lease_seconds: int = LEASE_SECONDS,
    ) -> None:
        # No retries: a Redis that does not answer is failed open or closed at once, as
        # configured, rather than holding every call through a backoff.
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self.prefix = prefix
        self.window_seconds = window_seconds
        self.lease_seconds = lease_seconds
        self.on_error = on_error
        self._admit = self.client.register_script(_ADMIT)
        self._release = self.client.register_script(_RELEASE)
        self._renew = self.client.register_script(_RENEW)
        # Leases of this process's calls in flight, renewed until they end: lease -> sets.
        self._leases: dict[str, list[str]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._last_log = -LOG_SECONDS

    def _keys(self, buckets: tuple[Bucket, ...]) -> list[str]:
        keys: list[str] = []
        for bucket in buckets:
            name = f"{self.prefix}:limits:{bucket.scope}"
            keys += [name, name + ":calls"]
        return keys

    async def admit(self, lease: str, buckets: tuple[Bucket, ...], tokens: int) -> Admission:
        if time.monotonic() < self._down_until:
            raise LimiterUnavailable("Redis failed a moment ago")
        args: list[Any] = [lease, tokens, self.lease_seconds, self.window_seconds]
        for bucket in buckets:
            quota = bucket.quota
            args += [_limit(quota.rpm), _limit(quota.tpm), _limit(quota.concurrent)]
        keys = self._keys(buckets)
        try:
            answer = await self._admit(keys=keys, args=args)
        except (TimeoutError, RedisError, OSError) as exc:
            self._down(exc)  # counted by the middleware, which fails the call open or closed
            raise LimiterUnavailable(f"{type(exc).__name__}: {exc}") from exc
        admitted, refused_at, kind, reset_ms, window, *figures = (int(x) for x in answer)
        counts = tuple(Count(figures[2 * i], figures[2 * i + 1]) for i in range(len(buckets)))
        if admitted:
            leased = [
                keys[2 * i + 1]
                for i, bucket in enumerate(buckets)
                if bucket.quota.concurrent is not None
            ]
            if leased:
                self._leases[lease] = leased
                self._start_renewing()
            return Admission(True, counts, reset_ms / 1000, window)
        return Admission(False, counts, reset_ms / 1000, window, refused_at - 1, _KINDS[kind])

    def release(
        self, lease: str, buckets: tuple[Bucket, ...], window: int, token_change: int
    ) -> None:
        self._leases.pop(lease, None)
        args: list[Any] = [lease, window, token_change]
        for bucket in buckets:
            quota = bucket.quota
            args += ["1" if quota.tpm is not None else "0"]
            args += ["1" if quota.concurrent is not None else "0"]
        if token_change == 0 and not any(b.quota.concurrent is not None for b in buckets):
            return  # nothing to give back
        # In a task of its own: the caller may be cancelled (its client hung up), and the
        # answer's end must not wait for Redis. A release lost with Redis is made good by
        # the lease's expiry.
        task = asyncio.get_running_loop().create_task(
            self._quietly(self._release(keys=self._keys(buckets), args=args))
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, work: Any) -> None:
        try:
            await work
        except (TimeoutError, RedisError, OSError) as exc:
            self._down(exc)
            if self.on_error is not None:
                self.on_error()
            now = time.monotonic()
            if now - self._last_log >= LOG_SECONDS:  # once a minute, not once a call
                self._last_log = now
                logger.error(
                    "Redis failed to release or renew rate-limit leases (they run out by "
                    "themselves): %s: %s",
                    type(exc).__name__,
                    exc,
                )

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_leases())

    async def _renew_leases(self) -> None:
        while self._leases:
            await asyncio.sleep(self.lease_seconds / 3)
            keys: list[str] = []
            args: list[Any] = [self.lease_seconds]
            for lease, sets in list(self._leases.items()):
                keys += sets
                args += [lease] * len(sets)
            if keys:
                await self._quietly(self._renew(keys=keys, args=args))

    def _down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + DOWN_SECONDS

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=2)
        await self.client.aclose()
