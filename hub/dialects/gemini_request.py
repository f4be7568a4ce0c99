"""A Gemini generateContent request read into the hub's normalized (OpenAI chat) request.

Every field is carried or refused by name (400 `unsupported_parameter`): nothing the
client asked for is dropped in silence. Contents and the system instruction are read
here, the options in gemini_options. Fields only a Gemini provider understands
(`safetySettings`, `topK`, Google's own tools...) are read but refused later, per
provider, by `gemini_only` (hub.dialects.gemini.Gemini.refusal): a call passed through to
a Gemini provider carries them untouched in its raw body.
"""

from __future__ import annotations

import json
from typing import Any

from hub.dialects.gemini_options import (
    NATIVE_ONLY_TOP,
    generation,
    tool_choice,
    tools,
    unsupported,
)

_TOP_READ = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"}


def normalize(body: dict[str, Any]) -> dict[str, Any]:
    """The normalized chat request for a generateContent body (model and stream come from
    the route's path)."""
    for key in body:
        if key not in _TOP_READ and key not in NATIVE_ONLY_TOP:
            raise unsupported(key, "the hub does not know this field")
    contents = body.get("contents")
    if not isinstance(contents, list):
        raise ValueError("'contents' must be a list")
    messages = _system(body.get("systemInstruction")) + _messages(contents)
    request: dict[str, Any] = {"model": str(body.get("model") or ""), "messages": messages}
    request.update(generation(body.get("generationConfig")))
    functions = tools(body.get("tools"))
    if functions:
        request["tools"] = functions
    choice = tool_choice(body.get("toolConfig"))
    if choice is not None:
        request["tool_choice"] = choice
    return request


def _system(instruction: Any) -> list[dict[str, Any]]:
    if instruction is None:
        return []
    if isinstance(instruction, str):
        return [{"role": "system", "content": instruction}]
    if not isinstance(instruction, dict):
        raise ValueError("'systemInstruction' must be a Content object")
    texts = []
    for part in instruction.get("parts") or []:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise unsupported("systemInstruction.parts", "only text parts can be system text")
        texts.append(part["text"])
    return [{"role": "system", "content": "\n\n".join(texts)}]


class _Calls:
    """Tool call ids: Gemini's own when it gives them, else made up, so that each
    functionResponse answers the call it follows (by id, else by name)."""

    def __init__(self) -> None:
        self.open: list[tuple[str, str]] = []  # (id, name), not yet answered
        self.made = 0

    def add(self, name: str, given: Any) -> str:
        self.made += 1
        call_id = str(given) if given else f"call_{self.made}_{name}"
        self.open.append((call_id, name))
        return call_id

    def answer(self, name: str, given: Any) -> str:
        for i, (call_id, called) in enumerate(self.open):
            if (given and call_id == str(given)) or (not given and called == name):
                del self.open[i]
                return call_id
        return str(given) if given else f"call_{name}"


def _messages(contents: list[Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    calls = _Calls()
    for i, content in enumerate(contents):
        if isinstance(content, str):  # the REST API takes a bare string as a user turn
            messages.append({"role": "user", "content": content})
            continue
        if not isinstance(content, dict):
            raise ValueError(f"contents[{i}] must be an object")
        role = content.get("role") or "user"
        parts = content.get("parts")
        if not isinstance(parts, list):
            raise ValueError(f"contents[{i}].parts must be a list")
        if role == "model":
            messages.append(_model_turn(parts, calls, i))
        elif role in ("user", "function"):
            messages.extend(_user_turn(parts, calls, i))
        else:
            raise ValueError(f"contents[{i}].role must be 'user' or 'model'")
    return messages


def _model_turn(parts: list[Any], calls: _Calls, i: int) -> dict[str, Any]:
    text: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        where = f"contents[{i}].parts[{j}]"
        if not isinstance(part, dict):
            raise ValueError(f"{where} must be an object")
        if part.get("thought"):
            continue  # the model's own earlier thinking: providers do not take it back
        if isinstance(part.get("text"), str):
            text.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            function = part["functionCall"]
            name = str(function.get("name", ""))
            tool_calls.append(
                {
                    "id": calls.add(name, function.get("id")),
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(function.get("args") or {})},
                }
            )
        else:
            raise unsupported(where, "a model turn may hold text and function calls only")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _user_turn(parts: list[Any], calls: _Calls, i: int) -> list[dict[str, Any]]:
    """Function responses become tool messages (first: they answer the model's calls),
    the rest one user message."""
    tools: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        where = f"contents[{i}].parts[{j}]"
        if not isinstance(part, dict):
            raise ValueError(f"{where} must be an object")
        if isinstance(part.get("text"), str):
            content.append({"type": "text", "text": part["text"]})
        elif isinstance(part.get("inlineData"), dict):
            data = part["inlineData"]
            url = f"data:{data.get('mimeType', '')};base64,{data.get('data', '')}"
            content.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(part.get("fileData"), dict):
            url = str(part["fileData"].get("fileUri", ""))
            content.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(part.get("functionResponse"), dict):
            response = part["functionResponse"]
            name = str(response.get("name", ""))
            tools.append(
                {
                    "role": "tool",
                    "tool_call_id": calls.answer(name, response.get("id")),
                    "content": json.dumps(response.get("response") or {}),
                }
            )
        else:
            raise unsupported(
                where, "user parts may be text, inlineData, fileData or a function response"
            )
    if content:
        only_text = all(p["type"] == "text" for p in content)
        text = "".join(p["text"] for p in content) if only_text else content
        tools.append({"role": "user", "content": text})
    return tools
