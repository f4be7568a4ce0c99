"""The options of a Gemini request (generationConfig, tools, toolConfig) read into the
normalized chat request's fields, and the fields only a Gemini provider honours.

Each is carried (same meaning under the OpenAI name) or refused by name with 400
`unsupported_parameter`; `gemini_only` names what a translated call cannot carry.
"""

from __future__ import annotations

from typing import Any

from hub.providers.fields import THINKING_BUDGETS
from middleware.errors import HubError

_CONFIG = {
    "temperature": "temperature",
    "topP": "top_p",
    "maxOutputTokens": "max_tokens",
    "candidateCount": "n",
    "seed": "seed",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
    # Carried to Anthropic and Gemini providers (their adapters take top_k); OpenAI-
    # compatible ones have no such field: refused for them by name (see gemini_only).
    "topK": "top_k",
}
# Read below (structured output, stop sequences, thinking, modalities).
_CONFIG_READ = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "_responseJsonSchema",
    "thinkingConfig",
    "responseModalities",
}
# Fields a Gemini provider honours and no other provider kind can: carried in a
# pass-through, refused for a translated call (see gemini_only).
NATIVE_ONLY_TOP = ("safetySettings", "cachedContent")
# generationConfig fields no OpenAI-compatible provider takes (others carry them).
NO_OPENAI_CONFIG = ("topK",)
# thinkingBudget (tokens) -> the OpenAI reasoning effort whose budget (the one the hub's
# adapters give Anthropic and Gemini for it) covers it; 0 asks for no thinking.
_BUDGETS = ((0, "none"), *sorted(((b, e) for e, b in THINKING_BUDGETS.items())))


def unsupported(field: str, why: str) -> HubError:
    return HubError(
        400, "unsupported_parameter", f"'{field}' is not supported through this hub: {why}.", field
    )


def generation(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError("'generationConfig' must be an object")
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in _CONFIG:
            if value is not None:
                out[_CONFIG[key]] = value
        elif key not in _CONFIG_READ:
            raise unsupported(f"generationConfig.{key}", "the hub does not carry it")
    stop = config.get("stopSequences")
    if stop:
        out["stop"] = stop
    out.update(_structured(config))
    effort = _effort(config.get("thinkingConfig"))
    if effort is not None:
        out["reasoning_effort"] = effort
    modalities = config.get("responseModalities")
    if modalities and [str(m).upper() for m in modalities] != ["TEXT"]:
        raise unsupported("generationConfig.responseModalities", "only TEXT answers are served")
    return out


def _structured(config: dict[str, Any]) -> dict[str, Any]:
    mime = config.get("responseMimeType")
    schema = config.get("responseJsonSchema") or config.get("_responseJsonSchema")
    if schema is None and config.get("responseSchema") is not None:
        schema = json_schema(config["responseSchema"])
    if mime in (None, "text/plain") and schema is None:
        return {}
    if mime not in (None, "application/json"):
        raise unsupported("generationConfig.responseMimeType", f"{mime} answers are not served")
    if schema is None:
        return {"response_format": {"type": "json_object"}}
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema},
        }
    }


def json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-style schema (`"type": "OBJECT"`) as JSON Schema (`"object"`)."""
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key in ("properties", "items", "anyOf", "prefixItems"):
            out[key] = (
                {k: json_schema(v) for k, v in value.items()}
                if key == "properties" and isinstance(value, dict)
                else json_schema(value)
            )
        elif key == "nullable":
            continue  # folded into the type below
        elif key == "propertyOrdering":
            continue  # order only: JSON Schema has none to give
        else:
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _effort(thinking: Any) -> str | None:
    if thinking is None:
        return None
    if not isinstance(thinking, dict):
        raise ValueError("'generationConfig.thinkingConfig' must be an object")
    for key in thinking:
        if key not in ("thinkingBudget", "thinkingLevel", "includeThoughts"):
            raise unsupported(f"generationConfig.thinkingConfig.{key}", "the hub does not carry it")
    level = thinking.get("thinkingLevel")
    if isinstance(level, str) and level:
        effort = level.lower()
        if effort not in THINKING_BUDGETS:
            raise unsupported(
                "generationConfig.thinkingConfig.thinkingLevel", f"unknown level {level}"
            )
        return effort
    budget = thinking.get("thinkingBudget")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        return None  # -1 or none: the model decides, as it does by default
    return next((effort for limit, effort in _BUDGETS if budget <= limit), "high")


def tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ValueError("'tools' must be a list")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise ValueError(f"tools[{i}] must be an object")
        for key, value in tool.items():
            if key != "functionDeclarations":
                continue  # Google's own tools: see gemini_only
            for declaration in value or []:
                out.append(_function(declaration))
    return out


def _function(declaration: Any) -> dict[str, Any]:
    if not isinstance(declaration, dict) or not declaration.get("name"):
        raise ValueError("each function declaration needs a name")
    schema = declaration.get("parametersJsonSchema")
    if schema is None and declaration.get("parameters") is not None:
        schema = json_schema(declaration["parameters"])
    function: dict[str, Any] = {"name": declaration["name"]}
    if declaration.get("description"):
        function["description"] = declaration["description"]
    function["parameters"] = schema if schema is not None else {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def tool_choice(config: Any) -> Any:
    if config is None:
        return None
    calling = config.get("functionCallingConfig") if isinstance(config, dict) else None
    for key in config if isinstance(config, dict) else []:
        if key != "functionCallingConfig":
            raise unsupported(f"toolConfig.{key}", "the hub does not carry it")
    if not isinstance(calling, dict):
        return None
    mode = str(calling.get("mode") or "AUTO").upper()
    names = calling.get("allowedFunctionNames") or []
    if mode == "AUTO" or mode == "MODE_UNSPECIFIED":
        return "auto"
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        if len(names) == 1:
            return {"type": "function", "function": {"name": names[0]}}
        if names:
            raise unsupported(
                "toolConfig.functionCallingConfig.allowedFunctionNames",
                "only one allowed function can be forced on other providers",
            )
        return "required"
    raise unsupported("toolConfig.functionCallingConfig.mode", f"mode {mode} is not carried")


def gemini_only(body: dict[str, Any], kind: str) -> str | None:
    """The first field of a Gemini request a provider of `kind` (not Gemini) cannot honour,
    by path."""
    for key in NATIVE_ONLY_TOP:
        if body.get(key):
            return key
    config = body.get("generationConfig")
    if isinstance(config, dict):
        for key in NO_OPENAI_CONFIG if kind == "openai" else ():
            if config.get(key) is not None:
                return f"generationConfig.{key}"
    for i, tool in enumerate(body.get("tools") or []):
        for key in tool if isinstance(tool, dict) else []:
            if key != "functionDeclarations":
                return f"tools[{i}].{key}"
    return None
