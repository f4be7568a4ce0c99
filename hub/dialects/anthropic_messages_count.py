"""`POST /v1/messages/count_tokens`: what a Messages request's prompt comes to, in tokens.

Answered by the hub itself, with the estimate its credit check holds for (hub.estimate),
for every model it serves: no provider is asked, nothing is recorded or billed (Anthropic
does not bill it either), and a model that is translated gets an answer too. The count is
an estimate, about four characters a token; clients use it to size their context.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from hub.bodies import parse_json, read_body
from hub.dialects.anthropic_messages_request import normalize
from hub.estimate import family_of
from hub.providers.registry import ProviderRegistry
from middleware.call import Call, Identity, get_identity
from middleware.errors import HubError
from middleware.tokens import prompt_tokens

PATH = "/v1/messages/count_tokens"


class CountTokens:
    """The endpoint, for a hub's providers and body limit."""

    def __init__(self, registry: ProviderRegistry, max_body_bytes: int) -> None:
        self.registry = registry
        self.max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> JSONResponse:
        identity = get_identity(request.scope)
        if identity is None:  # the auth layer lets no such request through; kept honest
            raise HubError(401, "missing_api_key", "This route needs an API key.")
        body = parse_json(await read_body(request, self.max_body_bytes))
        if not isinstance(body, dict):
            raise HubError(400, "invalid_json", "The request body must be a JSON object.")
        body.pop("max_tokens", None)  # not asked of count_tokens, nor counted
        try:
            normalized = normalize(body)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HubError(400, "invalid_request", f"The request cannot be read: {exc}") from exc
        model = normalized.get("model")
        if not isinstance(model, str) or not model:
            raise HubError(400, "missing_field", "The field 'model' is required.", "model")
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
        kind = self.registry.providers[provider].kind
        call = _sizing_call(identity, model, upstream, normalized)
        return JSONResponse({"input_tokens": prompt_tokens(normalized, family_of(call, kind))})


def _sizing_call(identity: Identity, model: str, upstream: str, body: dict[str, object]) -> Call:
    # family_of reads the model names from a Call; this one is never recorded.
    call = Call(identity, "chatCompletion", model, body, b"")
    call.upstream_model = upstream
    return call
