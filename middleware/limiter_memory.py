"""The rate limiter of one process: exact, in memory, with a clock that tests can turn."""

from __future__ import annotations

import time
from collections.abc import Callable

from middleware.ports import Admission, Bucket, Count

# Limits are per minute: fixed windows aligned to the clock's minutes (see middleware.limits).
WINDOW_SECONDS = 60


class MemoryLimiter:
    """Implements middleware.ports.RateLimiter for a hub of one process (and for tests).

    Every check-and-take runs without an await, so concurrent calls of this process are
    admitted one after another: exact, as long as no other process admits calls too.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._window = -1
        # Per scope, in the current window: requests and tokens taken.
        self._requests: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        # Per scope: the leases of its calls in flight.
        self._leases: dict[str, set[str]] = {}

    def _turn(self) -> tuple[int, float]:
        now = self.clock()
        window = int(now // WINDOW_SECONDS)
        if window != self._window:
            # A new minute: every counter starts again (tokens of calls still running were
            # reserved in the window they started in, and are corrected there or not at all).
            self._window = window
            self._requests.clear()
            self._tokens.clear()
        return window, (window + 1) * WINDOW_SECONDS - now

    async def admit(self, lease: str, buckets: tuple[Bucket, ...], tokens: int) -> Admission:
        window, reset = self._turn()
        counts = tuple(
            Count(self._requests.get(b.scope, 0), self._tokens.get(b.scope, 0)) for b in buckets
        )
        for index, (bucket, count) in enumerate(zip(buckets, counts, strict=True)):
            quota = bucket.quota
            refused = ""
            if quota.rpm is not None and count.requests + 1 > quota.rpm:
                refused = "requests"
            elif quota.tpm is not None and count.tokens + tokens > quota.tpm:
                refused = "tokens"
            elif quota.concurrent is not None and (
                len(self._leases.get(bucket.scope, ())) >= quota.concurrent
            ):
                refused = "concurrent"
            if refused:
                return Admission(False, counts, reset, window, index, refused)
        for bucket in buckets:
            self._requests[bucket.scope] = self._requests.get(bucket.scope, 0) + 1
            self._tokens[bucket.scope] = self._tokens.get(bucket.scope, 0) + tokens
            if bucket.quota.concurrent is not None:
                self._leases.setdefault(bucket.scope, set()).add(lease)
        taken = tuple(Count(c.requests + 1, c.tokens + tokens) for c in counts)
        return Admission(True, taken, reset, window)

    def release(
        self, lease: str, buckets: tuple[Bucket, ...], window: int, token_change: int
    ) -> None:
        same_window = window == self._window
        for bucket in buckets:
            leases = self._leases.get(bucket.scope)
            if leases is not None:
                leases.discard(lease)
                if not leases:
                    del self._leases[bucket.scope]
            if same_window and token_change and bucket.scope in self._tokens:
                self._tokens[bucket.scope] = max(0, self._tokens[bucket.scope] + token_change)

    def in_flight(self, scope: str) -> int:
        """Concurrency leases held in a scope (for tests and checks)."""
        return len(self._leases.get(scope, ()))
