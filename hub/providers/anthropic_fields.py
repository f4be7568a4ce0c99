"""OpenAI chat fields to Anthropic Messages: the table, and the functions that carry them.

Structured output goes as a forced tool (works on every Claude model, unlike Anthropic's
newer `output_config.format`): the tool's input schema is the caller's schema, and the
adapter hands the tool's input back as the message text. `json_object` is the same tool
with an open object schema.
"""

from __future__ import annotations

from typing import Any

from hub.providers.base import stop_list
from hub.providers.fields import (
    NO_REASONING,
    THINKING_BUDGETS,
    Rule,
    anything,
    carried,
    data_url,
    messages_problem,
    refused,
    translated,
)

# The forced tool structured output is asked through; its input comes back as the text.
ANSWER_TOOL = "json_answer"


def answer_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema the caller's `response_format` asks the answer to follow; None: plain text."""
    form = body.get("response_format")
    if not isinstance(form, dict):
        return None
    if form.get("type") == "json_object":
        return {"type": "object"}
    if form.get("type") == "json_schema":
        spec = form.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return schema
    return None


def thinking_budget(value: Any) -> int | None:
    """Tokens of thinking for a `reasoning_effort`; None if the value names no budget."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 1024 else None
    return THINKING_BUDGETS.get(value) if isinstance(value, str) else None


def _forces_tool(body: dict[str, Any]) -> bool:
    choice = body.get("tool_choice")
    return choice == "required" or isinstance(choice, dict) or answer_schema(body) is not None


def _number(value: Any, body: dict[str, Any]) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(value: Any, body: dict[str, Any]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _set(key: str) -> Any:
    def apply(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
        request[key] = value

    return apply


def _stop(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    request["stop_sequences"] = stop_list(body)


def _answer_tool(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    schema = answer_schema(body)
    assert schema is not None  # accepted only with one
    spec = value.get("json_schema") if isinstance(value.get("json_schema"), dict) else {}
    tool = {
        "name": ANSWER_TOOL,
        "description": str(spec.get("description") or "Give the answer as this JSON."),
        "input_schema": schema,
    }
    request["tools"] = [*request.get("tools", []), tool]
    # With tools of its own the caller's model may still call one of them; either way the
    # answer is JSON, never free text.
    choice = {"type": "any"} if len(request["tools"]) > 1 else {"type": "tool", "name": ANSWER_TOOL}
    request["tool_choice"] = {**request.get("tool_choice", {}), **choice}


def _thinking(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    budget = thinking_budget(value)
    assert budget is not None
    request["thinking"] = {"type": "enabled", "budget_tokens": budget}
    # Anthropic counts thinking inside max_tokens and wants it larger than the budget: the
    # caller's max_tokens stays the room for the answer itself.
    request["max_tokens"] = request["max_tokens"] + budget


def _one_at_a_time(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    if request.get("tools"):
        choice = request.get("tool_choice") or {"type": "auto"}
        if choice.get("type") != "none":
            request["tool_choice"] = {**choice, "disable_parallel_tool_use": True}


def _user_id(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    request.setdefault("metadata", {})["user_id"] = value


def _safety_id(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    if not isinstance(body.get("user"), str):  # `user` wins when both are given
        _user_id(request, value, body)


def _text(value: Any, body: dict[str, Any]) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256


def _effort(value: Any, body: dict[str, Any]) -> bool:
    # Anthropic refuses thinking with a forced tool (a required tool choice, or the tool
    # structured output is asked through): refused here rather than by Anthropic.
    return thinking_budget(value) is not None and not _forces_tool(body)


ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# Content parts of a user message: text, images (by URL or inline), and PDFs given inline
# (as a document block); a file given by id lives at OpenAI, out of Anthropic's reach.
USER_PARTS = {
    "text": anything,
    "image_url": anything,
    "file": lambda file: (
        (found := data_url(file, "file_data")) is not None and found[0] == "application/pdf"
    ),
}


def _messages(value: Any) -> str | None:
    return messages_problem(value, ROLES, USER_PARTS)


FIELDS: dict[str, Rule] = {
    "model": translated("model (the name after the provider prefix)"),
    "messages": translated(
        "system + messages (alternating turns, tool_use/tool_result blocks; user parts: "
        "text, image_url, inline PDF file as a document; other roles: text)",
        inner=_messages,
    ),
    "stream": carried("stream"),
    "stream_options": translated("usage is always reported; shown if include_usage"),
    "max_tokens": translated("max_tokens (4096 when absent)", accepts=_positive),
    "max_completion_tokens": translated("max_tokens", accepts=_positive),
    "temperature": carried("temperature", _set("temperature"), accepts=_number),
    "top_p": carried("top_p", _set("top_p"), accepts=_number),
    "top_k": carried("top_k", _set("top_k"), accepts=_number),
    "stop": translated(
        "stop_sequences", _stop, idle=([],), accepts=lambda v, b: stop_list(b) is not None
    ),
    "tools": translated("tools (input_schema)"),
    "tool_choice": translated("tool_choice (auto/any/none/tool)"),
    "parallel_tool_calls": translated(
        "tool_choice.disable_parallel_tool_use", _one_at_a_time, idle=(True,)
    ),
    "response_format": translated(
        f"a forced tool '{ANSWER_TOOL}' whose input is returned as the message text",
        _answer_tool,
        idle=({"type": "text"},),
        accepts=lambda v, b: answer_schema(b) is not None,
    ),
    "reasoning_effort": translated(
        "thinking.budget_tokens (minimal 1024, low 4096, medium 8192, high 16384; "
        "max_tokens raised by it), not with a forced tool; thinking returned as "
        "reasoning_content",
        _thinking,
        idle=NO_REASONING,
        accepts=_effort,
    ),
    "user": translated("metadata.user_id", _user_id, accepts=_text),
    "safety_identifier": translated("metadata.user_id", _safety_id, accepts=_text),
    "seed": refused("Anthropic has no seed"),
    "n": refused("Anthropic gives one answer per request", 1),
    "presence_penalty": refused("Anthropic has no presence penalty", 0, 0.0),
    "frequency_penalty": refused("Anthropic has no frequency penalty", 0, 0.0),
    "logit_bias": refused("Anthropic has no logit bias", {}),
    "logprobs": refused("Anthropic returns no log probabilities", False),
    "top_logprobs": refused("Anthropic returns no log probabilities", 0),
    "service_tier": refused("only the default tier is served", "auto", "default"),
    "store": refused("Anthropic stores no completions", False),
    "metadata": refused("Anthropic's metadata takes only a user id (send `user`)", {}),
    "modalities": refused("Anthropic answers in text only", ["text"]),
    "audio": refused("Anthropic answers in text only"),
    "prediction": refused("Anthropic has no predicted outputs"),
    "web_search_options": refused("web search is not offered through the hub"),
    "verbosity": refused("Anthropic has no verbosity setting", "medium"),
    "prompt_cache_key": refused("Anthropic caches by cache_control marks, not keys"),
    "prompt_cache_retention": refused("Anthropic caches by cache_control marks"),
    "functions": refused("deprecated by OpenAI: send `tools`"),
    "function_call": refused("deprecated by OpenAI: send `tool_choice`"),
}
