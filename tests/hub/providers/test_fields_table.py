"""The README's field table is the adapters' own tables, rendered: it cannot drift."""

from __future__ import annotations

from pathlib import Path

from hub.providers.field_table import END, START, render

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
