"""`POST /v1beta/models/{model}:countTokens`: what a Gemini request's prompt comes to.

Answered `{"totalTokens": N}` by the hub itself, with the estimate its credit check holds
for (hub.estimate, about four characters a token), for every model it serves, Gemini or
not: no provider is asked, nothing is recorded or billed (Google does not bill it either).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from hub.bodies import parse_json, read_body
from hub.dialects.gemini_request import normalize
from hub.estimate import family_of
from hub.providers.registry import ProviderRegistry
from middleware.call import Call, get_identity
from middleware.errors import HubError
from middleware.tokens import prompt_tokens


class GeminiCountTokens:
    """The endpoint, for a hub's providers and body limit."""

    def __init__(self, registry: ProviderRegistry, max_body_bytes: int) -> None:
        self.registry = registry
        self.max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> JSONResponse:
        identity = get_identity(request.scope)
        if identity is None:  # the auth layer lets no such request through; kept honest
            raise HubError(401, "missing_api_key", "This route needs an API key.")
        model = str(request.path_params["model"])
        if model.startswith("models/"):
            model = model[len("models/") :]
        body = parse_json(await read_body(request, self.max_body_bytes))
        if not isinstance(body, dict):
            raise HubError(400, "invalid_json", "The request body must be a JSON object.")
        # The REST API takes either the contents alone or a whole generateContent request.
        inner: Any = body.get("generateContentRequest", body)
        if not isinstance(inner, dict):
            raise HubError(400, "invalid_request", "'generateContentRequest' must be an object.")
        inner = {k: v for k, v in inner.items() if k != "model"}
        try:
            normalized = normalize(inner)
        except HubError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HubError(400, "invalid_request", f"The request cannot be read: {exc}") from exc
        if identity.models is not None and not identity.models.allows(model):
            raise HubError(
                403, "model_not_allowed", f"This API key may not use the model '{model}'.", "model"
            )
        resolved = self.registry.resolve(model)
        if resolved is None:
            raise HubError(
                404, "unknown_model", f"The model '{model}' is not served by this hub.", "model"
            )
        provider, upstream = resolved
        normalized["model"] = model
        # family_of reads the model names from a Call; this one is never recorded.
        call = Call(identity, "chatCompletion", model, normalized, b"")
        call.upstream_model = upstream
        tokens = prompt_tokens(normalized, family_of(call, self.registry.providers[provider].kind))
        return JSONResponse({"totalTokens": tokens})
