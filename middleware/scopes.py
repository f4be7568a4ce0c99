"""Which models a key may call: patterns such as `openai/*`, checked once per call."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ModelScope:
    """A key's allowed models. `*` matches any run of characters (slashes too); every other
    character stands for itself, so a model name with `?` or `[` needs no escaping. A name
    matches as the client sends it: `openai/*` allows `openai/gpt-4o`, not a bare `gpt-4o`.

    Compiled once, into one expression, when the key is read (the auth middleware caches the
    key record): a call then costs a single match, and a key without patterns none.
    """

    patterns: tuple[str, ...]
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        either = "|".join(".*".join(map(re.escape, p.split("*"))) for p in self.patterns)
        object.__setattr__(self, "_compiled", re.compile(f"(?:{either})", re.DOTALL))

    @classmethod
    def of(cls, patterns: Iterable[str] | None) -> ModelScope | None:
        """The scope of these patterns; None (every model) for None."""
        return None if patterns is None else cls(tuple(patterns))

    def allows(self, model: str) -> bool:
        return self._compiled.fullmatch(model) is not None
