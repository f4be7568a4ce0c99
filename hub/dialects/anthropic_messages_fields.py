"""The top-level fields of a Messages request, besides the conversation: each carried into
the normalized (OpenAI chat) request, passed only to Anthropic, or refused by name.

`native(param, what)` is the reading's judgement on a feature only Anthropic honours: the
lax reading (for the normalized body) leaves it out, the strict one (for a provider of
another kind) refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from middleware.errors import HubError

Native = Callable[[str, str], None]

# Fields of a Messages request (2026) read here or by the conversation reader.
KNOWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "output_format",
        "output_config",
        "context_management",
    }
)
# Anthropic's own features that have no counterpart elsewhere.
NATIVE_ONLY = frozenset({"container", "mcp_servers"})
# Server tools Anthropic bills per use, on top of tokens: the hub's rate cannot cover them.
PAID_TOOLS = ("web_search_", "code_execution_")
# Service tiers that cost no more than the default.
FREE_TIERS = frozenset({"auto", "standard_only"})
# The default prompt-cache lifetime; "1h" is billed at twice the input rate.
CACHE_TTLS = frozenset({"5m"})
# Keys of a custom tool: the rest is a feature of Anthropic's tool runner.
TOOL_KEYS = frozenset(
    {"name", "description", "input_schema", "cache_control", "strict", "type", "defer_loading"}
)

# Thinking budgets (tokens) as OpenAI reasoning efforts, for providers that take an effort:
# the largest effort whose budget the client's still covers (1024 is Anthropic's least).
EFFORTS = ((16384, "high"), (8192, "medium"), (0, "low"))
# Anthropic's output effort (output_config.effort) as OpenAI's.
OUTPUT_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high"}


def unsupported(param: str, why: str) -> HubError:
    return HubError(400, "unsupported_parameter", f"'{param}' {why}.", param)


def top_level(body: dict[str, Any], out: dict[str, Any], native: Native) -> None:
    """Every field but the conversation and the tools, into `out`."""
    for name in body:
        if name in NATIVE_ONLY:
            native(name, "an Anthropic feature")
        elif name not in KNOWN:
            raise unsupported(name, "is not a Messages API field the hub knows")
    for name in ("stream", "max_tokens", "temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences") is not None:
        out["stop"] = body["stop_sequences"]
    metadata = body.get("metadata")
    if metadata is not None:
        for key in as_object(metadata, "metadata"):
            if key != "user_id":
                raise unsupported(f"metadata.{key}", "is not a Messages API field")
        if metadata.get("user_id") is not None:
            out["user"] = metadata["user_id"]
    tier = body.get("service_tier")
    if tier is not None and tier not in FREE_TIERS:
        raise unsupported("service_tier", "costs more than the default tier")
    if body.get("thinking") is not None:
        effort = _effort(body["thinking"])
        if effort is not None:
            out["reasoning_effort"] = effort
    if body.get("output_format") is not None:
        out["response_format"] = _response_format(body["output_format"], "output_format")
    if body.get("output_config") is not None:
        _output_config(as_object(body["output_config"], "output_config"), out, native)
    if body.get("context_management") is not None:
        _context_management(body["context_management"], native)


def _effort(thinking: Any) -> str | None:
    """The reasoning effort for a `thinking` setting; None when thinking is off."""
    thinking = as_object(thinking, "thinking")
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    if kind == "adaptive":
        return "medium"  # the model decides how much: an effort in the middle
    budget = thinking.get("budget_tokens")
    if kind != "enabled" or not isinstance(budget, int) or isinstance(budget, bool):
        raise ValueError("'thinking' must be enabled with budget_tokens, adaptive or disabled")
    return next(effort for least, effort in EFFORTS if budget >= least)


def _response_format(form: Any, where: str) -> dict[str, Any]:
    form = as_object(form, where)
    if form.get("type") != "json_schema":
        raise unsupported(f"{where}.type", "must be 'json_schema'")
    schema = {"name": "output", "schema": form.get("schema"), "strict": True}
    return {"type": "json_schema", "json_schema": schema}


def _output_config(config: dict[str, Any], out: dict[str, Any], native: Native) -> None:
    for key, value in config.items():
        if key == "effort" and value in OUTPUT_EFFORTS:
            # Asked for outright: it wins over the effort read from `thinking`.
            out["reasoning_effort"] = OUTPUT_EFFORTS[value]
        elif key == "format":
            out["response_format"] = _response_format(value, "output_config.format")
        elif value is not None:
            native(f"output_config.{key}", "an Anthropic output setting")


def _context_management(management: Any, native: Native) -> None:
    # Clearing earlier thinking is what translation does anyway (other providers take none
    # back); any other edit (clearing old tool results, say) only Anthropic makes.
    edits = as_list(as_object(management, "context_management").get("edits"), "edits")
    for i, edit in enumerate(edits):
        kind = edit.get("type") if isinstance(edit, dict) else None
        if not (isinstance(kind, str) and kind.startswith("clear_thinking_")):
            native(f"context_management.edits[{i}]", f"the context edit {kind!r}")


def tools(tools: list[Any], native: Native) -> list[dict[str, Any]]:
    """Custom tools as OpenAI function tools."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        tool = as_object(tool, f"tools[{i}]")
        kind = tool.get("type")
        if isinstance(kind, str) and kind.startswith(PAID_TOOLS):
            raise unsupported(f"tools[{i}]", f"(the server tool {kind!r}) is billed per use")
        cache_mark(tool, f"tools[{i}]")
        if kind not in (None, "custom"):
            native(f"tools[{i}]", f"the Anthropic-defined tool {kind!r}")
            continue
        for key in tool:
            if key not in TOOL_KEYS:
                native(f"tools[{i}].{key}", "a tool setting")
        if tool.get("defer_loading") is True:
            # Kept from the model until a tool search loads it: not offered at all here.
            continue
        function: dict[str, Any] = {
            "name": str(tool.get("name", "")),
            "parameters": tool.get("input_schema") or {"type": "object"},
        }
        if tool.get("description"):
            function["description"] = str(tool["description"])
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if choice is None:
        return
    choice = as_object(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        name = str(choice.get("name", ""))
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise ValueError("'tool_choice.type' must be auto, any, tool or none")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def cache_mark(item: dict[str, Any], where: str) -> None:
    """Prompt-cache marks pass to Anthropic as they are; a longer-lived one is refused."""
    mark = item.get("cache_control")
    ttl = mark.get("ttl") if isinstance(mark, dict) else None
    if ttl is not None and ttl not in CACHE_TTLS:
        raise unsupported(f"{where}.cache_control.ttl", "is billed above the cache-write rate")


def as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"'{where}' must be an object")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"'{where}' must be a list")
    return value
