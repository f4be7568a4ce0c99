"""A key's model patterns: `*` matches any run of characters; everything else is literal."""

from __future__ import annotations

import pytest

from middleware.scopes import ModelScope


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("openai/gpt-4o", True),
        ("openai/", True),
        ("openrouter/openai/gpt-4o", True),  # `*` also matches '/'
        ("azure/gpt-4o-mini", True),
        ("gpt-4o-mini", False),  # names match as sent: no provider, no `*/` match
        ("openai", False),
        ("anthropic/claude", False),
        ("fixed?[1]", True),
        ("fixedA[1]", False),  # `?` and `[` are literal, unlike fnmatch
        ("OPENAI/gpt-4o", False),  # case counts
    ],
)
def test_patterns(model: str, allowed: bool) -> None:
    scope = ModelScope(("openai/*", "*/gpt-4o-mini", "fixed?[1]", "openrouter/*"))
    assert scope.allows(model) is allowed


def test_no_patterns_means_every_model() -> None:
    assert ModelScope.of(None) is None
    assert ModelScope.of(["a/*"]) == ModelScope(("a/*",))
