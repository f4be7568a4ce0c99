"""A provider's credentials as a weighted pool that learns from the provider's answers.

Smooth weighted round robin (nginx's): over any window, each credential is picked in
proportion to its weight, interleaved rather than in runs. A 429 or a 5xx cools a
credential down for a while (its weight drops to a tenth). A key the provider refuses (its
adapter reads that from the status and the provider's error type or code, never from the
message) leaves the pool and is tried again after a backoff that doubles with each refusal
in a row, up to fifteen minutes.

Benching is bounded so that callers cannot empty a pool: some refusals a caller can provoke
(a key not allowed the model or feature the caller asked for), so the pool never benches
its last key in service, and a key benched in error is back within the cap. The worst a
flood of provoked refusals can do is leave one key serving for a while, never none.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hub.secrets import mask

logger = logging.getLogger("aigne_hub.pool")

COOLDOWN_SECONDS = 180.0
COOLDOWN_FACTOR = 0.1
MAX_BACKOFF_SECONDS = 15 * 60.0
# A key goes out as a header value: a control character (CR, LF, NUL...) cannot, and such a
# key would fail every request routed to it.
_NOT_IN_HEADER = re.compile(r"[\x00-\x1f\x7f]")


def sendable(secret: str) -> bool:
    """Whether a key can be sent as (part of) an HTTP header value."""
    return _NOT_IN_HEADER.search(secret) is None


@dataclass(eq=False)
class Credential:
    """One API key of a provider, with what the adapter sends for it and how it fares."""

    secret: str | None
    weight: int
    headers: Any  # the adapter's prebuilt header sets for this key
    masked: str = ""
    current: float = 0.0
    cooled_until: float = 0.0
    disabled_until: float = 0.0
    refusals: int = 0
    stored_as: str | None = None  # the sealed form, for keys kept in the database

    def effective_weight(self, now: float) -> float:
        if self.disabled_until > now:
            return 0.0
        if self.cooled_until > now:
            return self.weight * COOLDOWN_FACTOR
        return float(self.weight)


class CredentialPool:
    def __init__(
        self,
        secrets: Sequence[str],
        weights: Sequence[int],
        build: Callable[[str | None], Any],
        clock: Callable[[], float] = time.monotonic,
        *,
        provider: str = "",
    ) -> None:
        self.build = build
        self.clock = clock
        self.provider = provider
        # Keys left out because they cannot be sent, so each is logged once, not per reload.
        self._unsendable: set[str] = set()
        keys: list[tuple[str | None, int]] = list(zip(secrets, weights, strict=True))
        self._keyless = not keys
        if not keys:
            keys = [(None, 100)]  # a provider without keys (a local Ollama, say)
        self.credentials = [
            Credential(secret, weight, build(secret), mask(secret) if secret else "none")
            for secret, weight in keys
            if secret is None or self._can_send(secret)
        ]

    def _can_send(self, secret: str) -> bool:
        if sendable(secret):
            return True
        if secret not in self._unsendable:
            self._unsendable.add(secret)
            logger.warning(
                "provider %s: key %r has a control character (CR, LF...) and cannot be sent "
                "in a header; it is left out",
                self.provider,
                mask(secret),
            )
        return False

    def add(self, secret: str, weight: int, stored_as: str) -> None:
        """One more key, stored in the database (as `stored_as`) rather than the config."""
        if not self._can_send(secret):
            return
        if len(self.credentials) == 1 and self.credentials[0].secret is None:
            self.credentials = []  # the keyless placeholder gives way to a real key
        if any(c.secret == secret for c in self.credentials):
            return
        credential = Credential(secret, weight, self.build(secret), mask(secret))
        credential.stored_as = stored_as
        self.credentials.append(credential)

    def keep_only_configured_and(self, stored: set[str]) -> None:
        """Drop keys from the database that it no longer holds (removed by an operator)."""
        kept = [c for c in self.credentials if c.stored_as is None or c.stored_as in stored]
        if kept or not self._keyless:
            self.credentials = kept
        else:  # all keys gone: back to a keyless provider rather than none at all
            self.credentials = [Credential(None, 100, self.build(None), "none")]

    def __len__(self) -> int:
        return len(self.credentials)

    def pick(self, exclude: Sequence[Credential] = ()) -> Credential | None:
        """The next credential to use, skipping `exclude`; None if none is usable."""
        if len(self.credentials) == 1 and not exclude:
            return self.credentials[0]  # the common case needs no weighing
        now = self.clock()
        chosen: Credential | None = None
        total = 0.0
        for credential in self.credentials:
            if credential in exclude:
                continue
            weight = credential.effective_weight(now)
            if weight <= 0:
                continue
            credential.current += weight
            total += weight
            if chosen is None or credential.current > chosen.current:
                chosen = credential
        if chosen is None:
            # Every key is refused or tried: the least recently refused one is the best bet
            # left, since a provider that refuses all keys may have recovered.
            candidates = [
                c for c in self.credentials if c not in exclude and c.disabled_until < math.inf
            ]
            if not candidates:
                return None
            chosen = min(candidates, key=lambda c: c.disabled_until)
        else:
            chosen.current -= total
        return chosen

    def succeeded(self, credential: Credential) -> None:
        credential.refusals = 0
        credential.disabled_until = 0.0

    def rate_limited(self, credential: Credential, retry_after: float | None = None) -> None:
        wait = min(max(COOLDOWN_SECONDS, retry_after or 0.0), MAX_BACKOFF_SECONDS)
        credential.cooled_until = self.clock() + wait

    def refused(self, credential: Credential) -> None:
        """The provider refused this key: it rests, longer with each refusal in a row, unless
        it is the last key in service (see the module's docstring)."""
        credential.refusals += 1
        now = self.clock()
        if not any(c is not credential and c.disabled_until <= now for c in self.credentials):
            return  # still refused, so it will rest once another key is back in service
        backoff = 5.0 + 2.0 ** min(credential.refusals, 16)  # the power is bounded: no overflow
        credential.disabled_until = now + min(backoff, MAX_BACKOFF_SECONDS)

    def cannot_send(self, credential: Credential) -> None:
        """The transport would not send a request with this key. One that cannot be a header
        value never will be (configured before keys were checked, say): it is out for good.
        Any other such failure counts as a refusal, bounded like one."""
        if credential.secret is not None and not sendable(credential.secret):
            credential.disabled_until = math.inf
        else:
            self.refused(credential)
