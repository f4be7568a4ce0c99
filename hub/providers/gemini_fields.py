"""OpenAI chat fields to Gemini generateContent: the table, and the functions that carry them.

Most options land in `generationConfig`. A JSON schema goes as `responseJsonSchema`, which
takes JSON Schema as written (no conversion to Gemini's older OpenAPI-style
`responseSchema`), so the schema reaches Gemini whole rather than shrunk to "some JSON".
"""

from __future__ import annotations

from typing import Any

from hub.providers.base import max_output_tokens, stop_list
from hub.providers.fields import (
    THINKING_BUDGETS,
    Rule,
    anything,
    data_url,
    messages_problem,
    refused,
    translated,
)

# Gemini's own default cap when the caller gives none but asks for max tokens in some form.
DEFAULT_MAX_TOKENS = 8192


def _config(request: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = request.setdefault("generationConfig", {})
    return config


def _set(key: str) -> Any:
    def apply(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
        _config(request)[key] = value

    return apply


def _number(value: Any, body: dict[str, Any]) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any, body: dict[str, Any]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: Any, body: dict[str, Any]) -> bool:
    return _whole(value, body) and value > 0


def _max_tokens(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    _config(request)["maxOutputTokens"] = max_output_tokens(body, DEFAULT_MAX_TOKENS)


def _stop(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    _config(request)["stopSequences"] = stop_list(body)


def _schema_of(value: Any) -> dict[str, Any] | None:
    spec = value.get("json_schema") if isinstance(value, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def _json_format(value: Any, body: dict[str, Any]) -> bool:
    if not isinstance(value, dict):
        return False
    return value.get("type") == "json_object" or (
        value.get("type") == "json_schema" and _schema_of(value) is not None
    )


def _response_format(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    config = _config(request)
    config["responseMimeType"] = "application/json"
    schema = _schema_of(value)
    if schema is not None:
        config["responseJsonSchema"] = schema


def thinking_budget(value: Any) -> int | None:
    """Gemini's thinkingBudget for a `reasoning_effort`: "none" turns thinking off (0)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if value == "none":
        return 0
    return THINKING_BUDGETS.get(value) if isinstance(value, str) else None


def _thinking(request: dict[str, Any], value: Any, body: dict[str, Any]) -> None:
    budget = thinking_budget(value)
    # Thoughts are asked back, to be returned as reasoning_content.
    thinking = {"thinkingBudget": budget, "includeThoughts": bool(budget)}
    _config(request)["thinkingConfig"] = thinking


def _candidates(value: Any, body: dict[str, Any]) -> bool:
    return _whole(value, body) and value >= 1


ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# Content parts of a user message: text, images, inline files of any type, and audio.
USER_PARTS = {
    "text": anything,
    "image_url": anything,
    "file": lambda file: data_url(file, "file_data") is not None,
    "input_audio": lambda audio: isinstance(audio, dict) and isinstance(audio.get("data"), str),
}


def _messages(value: Any) -> str | None:
    return messages_problem(value, ROLES, USER_PARTS)


FIELDS: dict[str, Rule] = {
    "model": translated("the model in the URL path (after the provider prefix)"),
    "messages": translated(
        "systemInstruction + contents (user/model turns, function parts; user parts: text, "
        "image_url, inline file and input_audio as inlineData; other roles: text)",
        inner=_messages,
    ),
    "stream": translated("streamGenerateContent?alt=sse"),
    "stream_options": translated("usage is always reported; shown if include_usage"),
    "max_tokens": translated("generationConfig.maxOutputTokens", _max_tokens, accepts=_positive),
    "max_completion_tokens": translated(
        "generationConfig.maxOutputTokens", _max_tokens, accepts=_positive
    ),
    "temperature": translated("generationConfig.temperature", _set("temperature"), accepts=_number),
    "top_p": translated("generationConfig.topP", _set("topP"), accepts=_number),
    "top_k": translated("generationConfig.topK", _set("topK"), accepts=_number),
    "stop": translated(
        "generationConfig.stopSequences",
        _stop,
        idle=([],),
        accepts=lambda v, b: stop_list(b) is not None,
    ),
    "tools": translated("tools.functionDeclarations (schema keywords Gemini rejects removed)"),
    "tool_choice": translated("toolConfig.functionCallingConfig (AUTO/ANY/NONE, allowed names)"),
    "parallel_tool_calls": refused("Gemini cannot be held to one call at a time", True),
    "response_format": translated(
        "generationConfig.responseMimeType application/json + responseJsonSchema (as given)",
        _response_format,
        idle=({"type": "text"},),
        accepts=_json_format,
    ),
    "reasoning_effort": translated(
        "generationConfig.thinkingConfig.thinkingBudget (none 0, minimal 1024, low 4096, "
        "medium 8192, high 16384); thoughts returned as reasoning_content",
        _thinking,
        accepts=lambda v, b: thinking_budget(v) is not None,
    ),
    "seed": translated("generationConfig.seed", _set("seed"), accepts=_whole),
    "presence_penalty": translated(
        "generationConfig.presencePenalty", _set("presencePenalty"), accepts=_number
    ),
    "frequency_penalty": translated(
        "generationConfig.frequencyPenalty", _set("frequencyPenalty"), accepts=_number
    ),
    "n": translated(
        "generationConfig.candidateCount, one choice each",
        _set("candidateCount"),
        idle=(1,),
        accepts=_candidates,
    ),
    "user": refused("Gemini takes no end-user id"),
    "safety_identifier": refused("Gemini takes no end-user id"),
    "logit_bias": refused("Gemini has no logit bias", {}),
    "logprobs": refused("log probabilities are not translated back", False),
    "top_logprobs": refused("log probabilities are not translated back", 0),
    "service_tier": refused("only the default tier is served", "auto", "default"),
    "store": refused("Gemini stores no completions", False),
    "metadata": refused("Gemini takes no request metadata", {}),
    "modalities": refused("only text answers are translated", ["text"]),
    "audio": refused("only text answers are translated"),
    "prediction": refused("Gemini has no predicted outputs"),
    "web_search_options": refused("web search is not offered through the hub"),
    "verbosity": refused("Gemini has no verbosity setting", "medium"),
    "prompt_cache_key": refused("Gemini caches through cachedContents, not keys"),
    "prompt_cache_retention": refused("Gemini caches through cachedContents"),
    "functions": refused("deprecated by OpenAI: send `tools`"),
    "function_call": refused("deprecated by OpenAI: send `tool_choice`"),
}
