"""What becomes of each OpenAI chat request field at a provider: carried, translated or refused.

The hub's normalized request is the OpenAI chat body. An adapter that speaks another
protocol builds its request from a table (one per adapter, in its module) saying, field by
field, what the provider receives and which function writes it there, or why the field
cannot be honoured. A field the table refuses, or that the table does not know, is answered
400 `unsupported_parameter` naming it, before anything goes upstream, so a caller never
gets an answer that quietly ignored what it asked for. An operator who prefers the old
leniency sets `drop_unsupported = true` on the provider: such fields are then dropped and
logged by name (never by value).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from middleware.call import Call

logger = logging.getLogger("aigne_hub.fields")

How = Literal["carried", "translated", "refused"]
# Writes one field's value into the provider's request, given the whole client body.
Apply = Callable[[dict[str, Any], Any, dict[str, Any]], None]
# Whether the provider can take this value (given the whole body): False refuses it.
Accepts = Callable[[Any, dict[str, Any]], bool]

# Every field of an OpenAI chat completion request (2026), in the order the README shows.
OPENAI_CHAT_FIELDS = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "user",
    "safety_identifier",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "service_tier",
    "store",
    "metadata",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "prompt_cache_retention",
    "functions",
    "function_call",
)

# Thinking budgets (tokens) for OpenAI's reasoning efforts, shared by the providers that take
# a budget (Anthropic, Gemini). 1024 is Anthropic's smallest budget. A whole number given as
# the effort (the AIGNE SDK allows it) is taken as the budget itself.
THINKING_BUDGETS = {"minimal": 1024, "low": 4096, "medium": 8192, "high": 16384}
# Efforts that ask for no reasoning at all: nothing to carry.
NO_REASONING = ("none",)


@dataclass(frozen=True)
class Rule:
    """How one OpenAI chat field reaches a provider kind."""

    how: How
    # What the provider receives (carried, translated), or why it cannot (refused): shown in
    # the README table and in refusals.
    note: str
    # Writes the value into the provider's request. None: the adapter's main translation
    # reads the field itself (messages, tools), or it is a refused field.
    apply: Apply | None = None
    # Values that ask for nothing beyond the default: they pass even where the field is
    # refused (`n: 1`, `logprobs: false`), and nothing is written for them.
    idle: tuple[Any, ...] = ()
    # For carried and translated fields, the values the provider cannot take.
    accepts: Accepts | None = None
    # For a field with parts (messages): where inside it lies the first part the provider
    # cannot take (`[2].content[0]`), so the refusal names that part; None: all can go.
    inner: Callable[[Any], str | None] | None = None

    def is_idle(self, value: Any) -> bool:
        # Compared with the type too: `True == 1`, but `n: true` is not `n: 1`.
        return any(type(value) is type(v) and value == v for v in self.idle)


def carried(note: str, apply: Apply | None = None, **kw: Any) -> Rule:
    return Rule("carried", note, apply, **kw)


def translated(note: str, apply: Apply | None = None, **kw: Any) -> Rule:
    return Rule("translated", note, apply, **kw)


def refused(note: str, *idle: Any) -> Rule:
    return Rule("refused", note, None, tuple(idle))


Table = Mapping[str, Rule]


def unsupported(body: dict[str, Any], table: Table | None) -> list[str]:
    """The body's fields this table cannot honour, in the body's order. A null value asks
    for the default and always passes. No table (the OpenAI pass-through): none."""
    if table is None:
        return []
    names: list[str] = []
    for name, value in body.items():
        if value is None:
            continue
        rule = table.get(name)
        if rule is None:
            names.append(name)
        elif rule.is_idle(value):
            continue
        elif rule.how == "refused" or (rule.accepts is not None and not rule.accepts(value, body)):
            names.append(name)
        elif rule.inner is not None and (where := rule.inner(value)) is not None:
            names.append(name + where)
    return names


def messages_problem(
    messages: Any, roles: frozenset[str], parts: Mapping[str, Callable[[Any], bool]]
) -> str | None:
    """Where in OpenAI `messages` the first role or content part lies that a provider has no
    place for (`[2].content[0].type`); None if every one can go. `parts` maps each content
    part type the provider takes in a user message to a test of the part's own object (a
    file given by id, say, cannot go where only inline data can); the other roles carry
    text parts only."""
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role not in roles:
            return f"[{i}].role"
        content = message.get("content")
        allowed = parts if role == "user" else _TEXT_ONLY
        for j, part in enumerate(content if isinstance(content, list) else []):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            fits = allowed.get(kind) if isinstance(kind, str) else None
            if fits is None:
                return f"[{i}].content[{j}].type"
            if not fits(part.get(kind)):
                return f"[{i}].content[{j}].{kind}"
    return None


def anything(value: Any) -> bool:
    return True


_TEXT_ONLY: dict[str, Callable[[Any], bool]] = {"text": anything}


def data_url(value: Any, key: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:` URL under `key` of a part object; else None."""
    url = value.get(key) if isinstance(value, dict) else None
    if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return media_type, data
    return None


def apply_fields(request: dict[str, Any], body: dict[str, Any], table: Table) -> None:
    """Write every field the table carries into the provider's request. Refused and unknown
    fields (present only when the operator drops them) are skipped."""
    for name, value in body.items():
        rule = table.get(name)
        if rule is None or rule.apply is None or value is None or rule.is_idle(value):
            continue
        if rule.accepts is not None and not rule.accepts(value, body):
            continue
        rule.apply(request, value, body)


@dataclass(frozen=True)
class Refusal:
    param: str
    message: str


class FieldPolicy:
    """One provider's decision on a call's fields: refuse them, or drop them and say so."""

    def __init__(self, provider: str, kind: str, table: Table | None, drop: bool) -> None:
        self.provider = provider
        self.kind = kind
        self.table = table
        self.drop = drop

    def check(self, call: Call) -> Refusal | None:
        """The refusal for a chat call this provider cannot honour in full; None if it can
        (or the operator lets such fields drop: then they are logged, by name only)."""
        if call.call_type != "chatCompletion" or call.dialect == self.kind:
            # A client speaking the provider's own protocol is passed through as sent.
            return None
        names = unsupported(call.body, self.table)
        if not names:
            return None
        if self.drop:
            logger.info(
                "call %s: provider %s drops unsupported fields: %s",
                call.id,
                self.provider,
                ", ".join(_shown(n) for n in names),
            )
            return None
        first = names[0]
        rule = self.table.get(first.split("[", 1)[0]) if self.table is not None else None
        why = rule.note if rule is not None and rule.how == "refused" else _why(rule)
        message = f"'{_shown(first)}' is not supported by provider '{self.provider}': {why}."
        if names[1:]:
            message += f" Also unsupported: {', '.join(_shown(n) for n in names[1:])}."
        return Refusal(_shown(first), message)


def _why(rule: Rule | None) -> str:
    if rule is None:
        return "the hub does not know how to carry this field to it"
    if rule.inner is not None:
        return f"this part has no place in what it receives ({rule.note})"
    return f"this value cannot be carried (the provider takes it as {rule.note})"


def _shown(name: str) -> str:
    """A field name fit for a log line or message: the client chose it, so it is cut short
    and stripped of what could forge a line."""
    text = name if name.isprintable() else name.encode("unicode_escape").decode()
    return text[:64]
