"""A Responses API request (`POST /v1/responses`) read into the hub's normalized request, the
OpenAI chat completions body every provider adapter reads.

Every top-level field is carried, accepted with a documented meaning, or refused with 400
`unsupported_parameter` naming it: nothing is dropped in silence (see README, "Responses
API"). The hub stores no responses, so `previous_response_id` and `conversation` are
refused; the caller sends the whole conversation as `input`, as Codex does.
"""

from __future__ import annotations

import json
from typing import Any

from middleware.errors import HubError

# Responses field -> chat field, carried as they are.
_SAME = {
    "temperature": "temperature",
    "top_p": "top_p",
    "parallel_tool_calls": "parallel_tool_calls",
    "user": "user",
    "metadata": "metadata",
    "service_tier": "service_tier",
    "safety_identifier": "safety_identifier",
    "max_output_tokens": "max_tokens",
    "stream": "stream",
}
# Accepted and not sent on, each for a stated reason (README, "Responses API"):
# store: the hub keeps no responses whatever it says; include: only what the answer has is
# included (reasoning.encrypted_content exists only on pass-through); client_metadata:
# Codex's telemetry about itself; stream_options: only include_obfuscation, which pads
# deltas the hub never pads; prompt_cache_key and prompt_cache_retention: caching hints that
# change no answer, which Anthropic and Gemini (caching otherwise) would refuse, and Codex
# sends on every call. All of them pass as sent to a provider serving the Responses API.
_ACCEPTED = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "text", "reasoning", "store"}
    | {"include", "client_metadata", "stream_options", "truncation", "background"}
    | {"prompt_cache_key", "prompt_cache_retention"}
)
# Refused whenever given (not None), with why.
_REFUSED = {
    "previous_response_id": "the hub stores no responses: send the whole conversation as input",
    "conversation": "the hub stores no conversations: send the whole conversation as input",
    "prompt": "stored prompt templates are not served through this hub",
    "top_logprobs": "log probabilities are not rendered by this hub",
    "max_tool_calls": "a limit on built-in tool calls has no meaning without built-in tools",
}
# The separator of a namespace tool's flattened name ("ns__tool"): chat function names allow
# only letters, digits, '_' and '-'.
NAMESPACE_SEPARATOR = "__"


def refuse(param: str, why: str) -> HubError:
    return HubError(400, "unsupported_parameter", f"'{param}' is not supported: {why}.", param)


def normalize(body: dict[str, Any]) -> dict[str, Any]:
    """The Responses body as a chat completions body; HubError naming a refused field."""
    for name, value in body.items():
        if value is None or name in _SAME or name in _ACCEPTED:
            continue
        raise refuse(name, _REFUSED.get(name, "this hub does not carry it"))
    _check_flags(body)
    request: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ValueError("'instructions' must be a string")
        messages.append({"role": "system", "content": instructions})
    messages += input_messages(body.get("input"))
    request["messages"] = messages
    for theirs, ours in _SAME.items():
        if body.get(theirs) is not None:
            request[ours] = body[theirs]
    tools = chat_tools(body.get("tools"))
    if tools:
        request["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        request["tool_choice"] = _tool_choice(choice)
    request.update(_text(body.get("text")))
    request.update(_reasoning(body.get("reasoning")))
    return request


def _check_flags(body: dict[str, Any]) -> None:
    if body.get("background"):
        raise refuse("background", "background responses need stored responses to poll")
    if body.get("truncation") not in (None, "disabled"):
        raise refuse("truncation", "only 'disabled' is served (the default)")
    include = body.get("include")
    if include is not None and not (
        isinstance(include, list) and all(isinstance(i, str) for i in include)
    ):
        raise ValueError("'include' must be a list of strings")


def _text(text: Any) -> dict[str, Any]:
    if text is None:
        return {}
    if not isinstance(text, dict):
        raise ValueError("'text' must be an object")
    out: dict[str, Any] = {}
    for key in text:
        if key not in ("format", "verbosity"):
            raise refuse(f"text.{key}", "this hub does not carry it")
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None:
        return out
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        schema = {"name": fmt.get("name", "response"), "schema": fmt.get("schema", {})}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind != "text":
        raise refuse("text.format.type", f"format {str(kind)[:40]!r} is not served")
    return out


def _reasoning(reasoning: Any) -> dict[str, Any]:
    # `summary` is accepted and not sent on: chat providers have no summary to ask for;
    # whatever reasoning text they stream comes back as a reasoning summary.
    if reasoning is None:
        return {}
    if not isinstance(reasoning, dict):
        raise ValueError("'reasoning' must be an object")
    for key in reasoning:
        if key not in ("effort", "summary", "generate_summary"):
            raise refuse(f"reasoning.{key}", "this hub does not carry it")
    effort = reasoning.get("effort")
    return {"reasoning_effort": effort} if effort is not None else {}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": str(choice.get("name"))}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise refuse("tool_choice", f"tool choice {str(kind)[:40]!r} is not served")


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    """Function tools in chat's nested shape; a namespace's functions flattened as
    `namespace__name`; any other tool type refused by name."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ValueError("'tools' must be a list")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            out.append(_function(tool, ""))
        elif kind == "namespace":
            prefix = str(tool.get("name")) + NAMESPACE_SEPARATOR
            for inner in tool.get("tools") or []:
                if not isinstance(inner, dict) or inner.get("type") != "function":
                    raise refuse(f"tools[{i}].tools", "a namespace may hold function tools only")
                out.append(_function(inner, prefix))
        else:
            raise refuse(
                f"tools[{i}]",
                f"tool type {str(kind)[:40]!r} is not served (only 'function' tools are: "
                "built-in tools are billed apart from tokens)",
            )
    return out


def _function(tool: dict[str, Any], prefix: str) -> dict[str, Any]:
    function: dict[str, Any] = {"name": prefix + str(tool["name"])}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def input_messages(given: Any) -> list[dict[str, Any]]:
    """`input` (a string or a list of items) as chat messages."""
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not isinstance(given, list):
        raise ValueError("'input' must be a string or a list of items")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(given):
        if not isinstance(item, dict):
            raise ValueError(f"'input[{i}]' must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, i))
        elif kind == "function_call":
            _add_tool_call(messages, item)
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item["call_id"]),
                    "content": _output_text(item.get("output"), f"input[{i}].output"),
                }
            )
        elif kind == "reasoning":
            # Another model's chain of thought (often encrypted for OpenAI alone): a
            # translated provider cannot take it back, so it is left out (README).
            continue
        else:
            raise refuse(f"input[{i}]", f"input item type {str(kind)[:40]!r} is not served")
    return messages


_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _message(item: dict[str, Any], i: int) -> dict[str, Any]:
    role = _ROLES.get(str(item.get("role")))
    if role is None:
        raise ValueError(f"'input[{i}].role' must be user, assistant, system or developer")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise ValueError(f"'input[{i}].content' must be a string or a list of parts")
    parts = [_part(part, f"input[{i}].content[{j}]") for j, part in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        # Text alone reads best as one string, for every provider.
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    if role != "user":
        raise refuse(f"input[{i}].content", "images are served in user messages only")
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise refuse(f"{where}.file_id", "images are served by URL or data URL only")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise refuse(f"{where}.type", f"content type {str(kind)[:40]!r} is not served")


def _add_tool_call(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    name = str(item["name"])
    if item.get("namespace"):
        name = str(item["namespace"]) + NAMESPACE_SEPARATOR + name
    arguments = item.get("arguments", "")
    call = {
        "id": str(item["call_id"]),
        "type": "function",
        "function": {
            "name": name,
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and "tool_calls" in last:
        last["tool_calls"].append(call)  # parallel calls are one assistant turn in chat
    elif last is not None and last["role"] == "assistant" and not last.get("tool_calls"):
        last["tool_calls"] = [call]  # the text the model said before calling
        if not last.get("content"):
            last["content"] = None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _output_text(output: Any, where: str) -> str:
    """A tool's output as text: chat's tool messages carry text only."""
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        return json.dumps(output)
    texts = []
    for j, part in enumerate(output):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            kind = part.get("type") if isinstance(part, dict) else None
            raise refuse(
                f"{where}[{j}].type", f"tool output of type {str(kind)[:40]!r} is not served"
            )
        texts.append(str(part.get("text", "")))
    return "".join(texts)
