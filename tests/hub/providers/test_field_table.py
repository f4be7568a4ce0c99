"""The field tables as data: the README's table is them rendered (it cannot drift), and
the policy built on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.providers import anthropic_fields
from hub.providers.field_table import END, START, render
from hub.providers.fields import FieldPolicy
from middleware.call import Call, Identity

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_field_table_matches_the_adapters_tables() -> None:
    text = README.read_text()
    start, end = text.index(START), text.index(END) + len(END)
    assert text[start:end] == render(), "run `python -m hub.providers.field_table` into README"


def test_every_openai_chat_field_has_a_rule_for_each_translating_adapter() -> None:
    rendered = render()
    for line in rendered.splitlines():
        if line.startswith("| `"):
            # A known field with no rule would show as a bare "refused": each is decided.
            assert "| refused |" not in line, line


def _call(dialect: str, body: dict[str, Any]) -> Call:
    identity = Identity(account_id=1, user_did="did:abt:u")
    return Call(identity, "chatCompletion", "claude/c", body, b"", dialect=dialect)


def test_a_client_speaking_the_providers_own_protocol_is_not_checked() -> None:
    policy = FieldPolicy("claude", "anthropic", anthropic_fields.FIELDS, drop=False)
    body = {"model": "claude/c", "messages": [], "seed": 1, "thinking": {"type": "enabled"}}
    refusal = policy.check(_call("openai", body))
    assert refusal is not None and refusal.param == "seed"
    assert "thinking" in refusal.message  # every unsupported field is named, first as param
    assert policy.check(_call("anthropic", body)) is None  # passed through as sent
