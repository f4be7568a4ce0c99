"""Anthropic Messages requests read into the hub's normalized request (an OpenAI chat body).

Two readings of one body. `normalize` (lax) gives the normalized body every layer reads:
the model, the messages as the credit hold counts them, the stream flag. Features only an
Anthropic provider can honour (server-executed or Anthropic-defined tools, documents by URL,
citations, containers...) are left out of it, because to an Anthropic provider the client's
raw body passes through untouched and nothing is lost. `untranslatable` (strict) is asked
only when the call goes to another kind of provider: it names the first such feature, which
is then refused with 400 `unsupported_parameter` rather than dropped in silence.

What no provider may receive through the hub (it would bill above the model's rate: paid
server tools, a one-hour prompt cache, a priority tier) is refused by both readings.
"""

from __future__ import annotations

import json
from typing import Any

from middleware.errors import HubError

# Fields of a Messages request (2026) that translate, or that pass only to Anthropic.
TRANSLATED = frozenset(
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
    }
)
NATIVE_ONLY = frozenset({"container", "mcp_servers", "context_management", "output_config"})
# Server tools Anthropic bills per use, on top of tokens: the hub's rate cannot cover them.
PAID_TOOLS = ("web_search_", "code_execution_")
# Service tiers that cost no more than the default.
FREE_TIERS = frozenset({"auto", "standard_only"})
# The default prompt-cache lifetime; "1h" is billed at twice the input rate.
CACHE_TTLS = frozenset({"5m"})

# Thinking budgets (tokens) as OpenAI reasoning efforts, for providers that take an effort:
# the largest effort whose budget the client's still covers (1024 is Anthropic's least).
EFFORTS = ((16384, "high"), (8192, "medium"), (0, "low"))

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def unsupported(param: str, why: str) -> HubError:
    return HubError(400, "unsupported_parameter", f"'{param}' {why}.", param)


class _Reader:
    """One reading of a Messages body; `strict` refuses what only Anthropic can honour."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def native(self, param: str, what: str) -> None:
        if self.strict:
            raise unsupported(param, f"({what}) is served by Anthropic providers only")

    def read(self, body: dict[str, Any]) -> dict[str, Any]:
        for name in body:
            if name in NATIVE_ONLY:
                self.native(name, "an Anthropic feature")
            elif name not in TRANSLATED:
                raise unsupported(name, "is not a Messages API field the hub knows")
        out: dict[str, Any] = {"model": body.get("model"), "messages": self.messages(body)}
        if body.get("stream") is not None:
            out["stream"] = body["stream"]
        if body.get("max_tokens") is not None:
            out["max_tokens"] = body["max_tokens"]
        for name in ("temperature", "top_p", "top_k"):
            if body.get(name) is not None:
                out[name] = body[name]
        if body.get("stop_sequences") is not None:
            out["stop"] = body["stop_sequences"]
        self.options(body, out)
        tools = self.tools(_list(body.get("tools"), "tools"))
        if tools:
            out["tools"] = tools
        self.tool_choice(body.get("tool_choice"), out)
        return out

    def options(self, body: dict[str, Any], out: dict[str, Any]) -> None:
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise ValueError("'metadata' must be an object")
            for key in metadata:
                if key != "user_id":
                    raise unsupported(f"metadata.{key}", "is not a Messages API field")
            if metadata.get("user_id") is not None:
                out["user"] = metadata["user_id"]
        tier = body.get("service_tier")
        if tier is not None and tier not in FREE_TIERS:
            raise unsupported("service_tier", "costs more than the default tier")
        thinking = body.get("thinking")
        if thinking is not None:
            effort = _effort(thinking)
            if effort is not None:
                out["reasoning_effort"] = effort
        form = body.get("output_format")
        if form is not None:
            if not (isinstance(form, dict) and form.get("type") == "json_schema"):
                raise unsupported("output_format.type", "must be 'json_schema'")
            schema = {"name": "output", "schema": form.get("schema"), "strict": True}
            out["response_format"] = {"type": "json_schema", "json_schema": schema}

    def messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        system = body.get("system")
        if isinstance(system, str):
            if system:
                out.append({"role": "system", "content": system})
        elif system is not None:
            parts = [self.text(b, f"system[{i}]") for i, b in enumerate(_list(system, "system"))]
            if parts:
                out.append({"role": "system", "content": parts})
        for i, message in enumerate(_list(body.get("messages"), "messages")):
            if not isinstance(message, dict):
                raise ValueError(f"messages[{i}] must be an object")
            role = message.get("role")
            if role == "user":
                out.extend(self.user(message.get("content"), f"messages[{i}]"))
            elif role == "assistant":
                out.append(self.assistant(message.get("content"), f"messages[{i}]"))
            else:
                raise ValueError(f"messages[{i}].role must be 'user' or 'assistant'")
        return out

    def text(self, block: Any, where: str) -> dict[str, Any]:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise ValueError(f"{where} must be a text block")
        _cache_mark(block, where)
        if block.get("citations"):
            self.native(f"{where}.citations", "citations")
        return {"type": "text", "text": str(block.get("text", ""))}

    def user(self, content: Any, where: str) -> list[dict[str, Any]]:
        """A user turn: its tool results as tool messages first (OpenAI wants them right
        after the assistant's tool calls), then the rest as one user message."""
        if isinstance(content, str):
            return [{"role": "user", "content": content}]
        results: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(_list(content, f"{where}.content")):
            at = f"{where}.content[{j}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_result":
                results.append(self.tool_result(block, at))
            elif kind == "text":
                parts.append(self.text(block, at))
            elif kind == "image":
                parts.append(self.image(block, at))
            elif kind == "document":
                parts.extend(self.document(block, at))
            elif kind in ("thinking", "redacted_thinking"):
                continue  # not a user block; Anthropic would refuse it, others ignore it
            else:
                self.native(f"{at}.type", f"a {kind!r} block")
        if parts:
            results.append({"role": "user", "content": parts})
        return results

    def image(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        _cache_mark(block, where)
        source = _object(block.get("source"))
        kind = source.get("type")
        if kind == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif kind == "url":
            url = str(source.get("url", ""))
        else:
            self.native(f"{where}.source.type", f"an image of source type {kind!r}")
            url = ""
        return {"type": "image_url", "image_url": {"url": url}}

    def document(self, block: dict[str, Any], where: str) -> list[dict[str, Any]]:
        _cache_mark(block, where)
        if isinstance(block.get("citations"), dict) and block["citations"].get("enabled"):
            self.native(f"{where}.citations", "citations")
        source = _object(block.get("source"))
        kind = source.get("type")
        if kind == "base64":
            data = f"data:{source.get('media_type')};base64,{source.get('data')}"
            name = str(block.get("title") or "document.pdf")
            return [{"type": "file", "file": {"filename": name, "file_data": data}}]
        if kind == "text":
            return [{"type": "text", "text": str(source.get("data", ""))}]
        if kind == "content":
            content = source.get("content")
            if isinstance(content, str):
                return [{"type": "text", "text": content}]
            blocks = _list(content, f"{where}.source.content")
            return [self.text(b, f"{where}.source.content[{k}]") for k, b in enumerate(blocks)]
        self.native(f"{where}.source.type", f"a document of source type {kind!r}")
        return []

    def tool_result(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        _cache_mark(block, where)
        content = block.get("content")
        if isinstance(content, str) or content is None:
            text = content or ""
        else:
            texts = []
            for k, part in enumerate(_list(content, f"{where}.content")):
                if isinstance(part, dict) and part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                else:
                    kind = part.get("type") if isinstance(part, dict) else None
                    self.native(f"{where}.content[{k}]", f"a {kind!r} block in a tool result")
            text = "\n".join(texts)
        if block.get("is_error") is True:
            # OpenAI tool messages have no error flag: the model is told in words.
            text = f"Error: {text}"
        return {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}

    def assistant(self, content: Any, where: str) -> dict[str, Any]:
        if isinstance(content, str):
            return {"role": "assistant", "content": content}
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(_list(content, f"{where}.content")):
            at = f"{where}.content[{j}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(self.text(block, at)["text"])
            elif kind == "tool_use":
                assert isinstance(block, dict)
                _cache_mark(block, at)
                arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
                function = {"name": str(block.get("name", "")), "arguments": arguments}
                calls.append(
                    {"id": str(block.get("id", "")), "type": "function", "function": function}
                )
            elif kind in ("thinking", "redacted_thinking"):
                # Earlier thinking is Anthropic's own (signed); other providers take none back.
                continue
            else:
                self.native(f"{at}.type", f"a {kind!r} block")
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            message["tool_calls"] = calls
        return message

    def tools(self, tools: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise ValueError(f"tools[{i}] must be an object")
            kind = tool.get("type")
            if isinstance(kind, str) and kind.startswith(PAID_TOOLS):
                raise unsupported(f"tools[{i}]", f"(the server tool {kind!r}) is billed per use")
            _cache_mark(tool, f"tools[{i}]")
            if kind not in (None, "custom"):
                self.native(f"tools[{i}]", f"the Anthropic-defined tool {kind!r}")
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

    def tool_choice(self, choice: Any, out: dict[str, Any]) -> None:
        if choice is None:
            return
        choice = _object(choice)
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


def _effort(thinking: Any) -> str | None:
    """The reasoning effort for a `thinking` setting; None when thinking is off."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return None
    if kind == "adaptive":
        return "medium"
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if kind != "enabled" or not isinstance(budget, int) or isinstance(budget, bool):
        raise ValueError("'thinking' must be {type: enabled, budget_tokens: N} or disabled")
    return next(effort for least, effort in EFFORTS if budget >= least)


def _cache_mark(item: dict[str, Any], where: str) -> None:
    """Prompt-cache marks pass to Anthropic as they are; a longer-lived one is refused."""
    mark = item.get("cache_control")
    ttl = mark.get("ttl") if isinstance(mark, dict) else None
    if ttl is not None and ttl not in CACHE_TTLS:
        raise unsupported(f"{where}.cache_control.ttl", "is billed above the cache-write rate")


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"'{where}' must be a list")
    return value


def normalize(body: dict[str, Any]) -> dict[str, Any]:
    """The normalized (OpenAI chat) request for a Messages body; HubError or ValueError
    for a body no provider may take."""
    return _Reader(strict=False).read(body)


def untranslatable(body: dict[str, Any]) -> HubError | None:
    """Why this Messages body cannot go to a provider other than Anthropic; None if it can."""
    try:
        _Reader(strict=True).read(body)
    except HubError as exc:
        return exc
    return None
