"""A provider's credentials as a weighted pool that learns from the provider's answers.

Smooth weighted round robin (nginx's): over any window, each credential is picked in
proportion to its weight, interleaved rather than in runs. A 429 or a 5xx cools a
credential down for a while (its weight drops to a tenth); a refused key (401, 402, 403)
leaves the pool and is tried again after a backoff that doubles with each refusal, up to
three hours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hub.secrets import mask

COOLDOWN_SECONDS = 180.0
COOLDOWN_FACTOR = 0.1
MAX_BACKOFF_SECONDS = 3 * 3600.0


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
    ) -> None:
        keys: list[tuple[str | None, int]] = list(zip(secrets, weights, strict=True))
        if not keys:
            keys = [(None, 100)]  # a provider without keys (a local Ollama, say)
        self.build = build
        self.credentials = [
            Credential(secret, weight, build(secret), mask(secret) if secret else "none")
            for secret, weight in keys
        ]
        self.clock = clock

    def add(self, secret: str, weight: int, stored_as: str) -> None:
        """One more key, stored in the database (as `stored_as`) rather than the config."""
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
        if kept:
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
            candidates = [c for c in self.credentials if c not in exclude]
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
        credential.cooled_until = self.clock() + max(COOLDOWN_SECONDS, retry_after or 0.0)

    def refused(self, credential: Credential) -> None:
        credential.refusals += 1
        backoff = min(5.0 + 2.0**credential.refusals, MAX_BACKOFF_SECONDS)
        credential.disabled_until = self.clock() + backoff
