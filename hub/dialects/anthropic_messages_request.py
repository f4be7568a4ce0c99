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

from hub.dialects.anthropic_messages_fields import (
    as_list,
    cache_mark,
    tool_choice,
    tools,
    top_level,
    unsupported,
)
from middleware.errors import HubError


class _Reader:
    """One reading of a Messages body; `strict` refuses what only Anthropic can honour."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def native(self, param: str, what: str) -> None:
        if self.strict:
            raise unsupported(param, f"({what}) is served by Anthropic providers only")

    def read(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"model": body.get("model"), "messages": self.messages(body)}
        top_level(body, out, self.native)
        offered = tools(as_list(body.get("tools"), "tools"), self.native)
        if offered:
            out["tools"] = offered
        tool_choice(body.get("tool_choice"), out)
        return out

    def messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        system = body.get("system")
        if isinstance(system, str):
            if system:
                out.append({"role": "system", "content": system})
        elif system is not None:
            parts = [self.text(b, f"system[{i}]") for i, b in enumerate(as_list(system, "system"))]
            if parts:
                out.append({"role": "system", "content": parts})
        for i, message in enumerate(as_list(body.get("messages"), "messages")):
            if not isinstance(message, dict):
                raise ValueError(f"messages[{i}] must be an object")
            role = message.get("role")
            if role == "user":
                out.extend(self.user(message.get("content"), f"messages[{i}]"))
            elif role == "system":
                # Instructions mid-conversation (Claude Code sends them): OpenAI takes a
                # system message anywhere.
                out.append({"role": "system", "content": self.system(message, i)})
            elif role == "assistant":
                out.append(self.assistant(message.get("content"), f"messages[{i}]"))
            else:
                raise ValueError(f"messages[{i}].role must be 'user', 'assistant' or 'system'")
        return out

    def system(self, message: dict[str, Any], i: int) -> str | list[dict[str, Any]]:
        content = message.get("content")
        if isinstance(content, str):
            return content
        blocks = as_list(content, f"messages[{i}].content")
        return [self.text(b, f"messages[{i}].content[{j}]") for j, b in enumerate(blocks)]

    def text(self, block: Any, where: str) -> dict[str, Any]:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise ValueError(f"{where} must be a text block")
        cache_mark(block, where)
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
        for j, block in enumerate(as_list(content, f"{where}.content")):
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
        cache_mark(block, where)
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
        cache_mark(block, where)
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
            blocks = as_list(content, f"{where}.source.content")
            return [self.text(b, f"{where}.source.content[{k}]") for k, b in enumerate(blocks)]
        self.native(f"{where}.source.type", f"a document of source type {kind!r}")
        return []

    def tool_result(self, block: dict[str, Any], where: str) -> dict[str, Any]:
        cache_mark(block, where)
        content = block.get("content")
        if isinstance(content, str) or content is None:
            text = content or ""
        else:
            texts = []
            for k, part in enumerate(as_list(content, f"{where}.content")):
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
        for j, block in enumerate(as_list(content, f"{where}.content")):
            at = f"{where}.content[{j}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(self.text(block, at)["text"])
            elif kind == "tool_use":
                assert isinstance(block, dict)
                cache_mark(block, at)
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


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
