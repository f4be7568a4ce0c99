"""Reaching a provider: failover between providers, then between one provider's keys."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from hub.providers.base import Adapter
from hub.providers.pool import Credential
from hub.tracing.upstream import add_trace_headers
from middleware.call import Call

logger = logging.getLogger("aigne_hub.proxy")

MAX_ATTEMPTS = 3


@dataclass(slots=True)
class Failure:
    """Why no upstream answered: the hub's own error, or a provider's error answer."""

    status: int
    code: str
    message: str
    retry: bool = False  # another provider might do better
    upstream_body: bytes | None = None  # a provider's error body, mapped by the proxy


class Connector:
    """Sends a call upstream through the shared transport, failing over as it may."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def connect(
        self, call: Call, providers: list[Adapter]
    ) -> tuple[httpx.Response, Adapter] | Failure:
        """An upstream that answered, and which one; or why none did.

        A model named without a provider may be served by several: when one fails before
        answering in a way another might not (it is down, throttled, or lacks the call
        type), the next one is tried.
        """
        failure = Failure(404, "unknown_model", f"The model '{call.model}' is not served.")
        for provider in providers:
            call.provider = provider.name
            if not provider.supports(call.call_type):
                message = f"Provider '{provider.name}' does not offer {call.call_type} calls."
                failure = Failure(400, "unsupported_call_type", message, retry=True)
                continue
            result = await self.send(call, provider)
            if isinstance(result, httpx.Response):
                return result, provider
            failure = result
            if not result.retry:
                break
        return failure

    async def send(self, call: Call, provider: Adapter) -> httpx.Response | Failure:
        """The provider's answer, trying its credentials in turn.

        A connection failure, a timeout, a 429, a 5xx, a refused key (as the adapter reads
        the provider's answer) or a key the transport cannot send, before the first byte,
        moves on to the next credential (at most MAX_ATTEMPTS, each logged and counted on
        the call); the pool learns from each answer.
        """
        tried: list[Credential] = []
        failure = Failure(502, "upstream_unavailable", "No credential could be tried.", True)
        while len(tried) < MAX_ATTEMPTS:
            credential = provider.pool.pick(tried)
            if credential is None:
                break
            tried.append(credential)
            call.attempts += 1
            call.credential = credential.masked
            try:
                request = provider.build_request(call, credential)
            except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
                # A request the OpenAI format allows in shape but not in detail (a tool call
                # that is not an object, say) cannot be translated for this provider.
                logger.info("cannot translate call %s for %s: %r", call.id, provider.name, exc)
                return Failure(
                    400,
                    "invalid_request",
                    f"The request could not be translated for provider '{provider.name}': "
                    "check the shape of messages, tools and content parts.",
                )
            add_trace_headers(request)
            call.sent_upstream = True
            result = await self._attempt(call, provider, credential, request)
            if isinstance(result, httpx.Response):
                return result
            failure = result
            if not result.retry:
                return result
        return failure

    async def _attempt(
        self, call: Call, provider: Adapter, credential: Credential, request: httpx.Request
    ) -> httpx.Response | Failure:
        """One key's try; a Failure with `retry` set when the next key may do better."""
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            # Only a request that never reached the provider is safe to send again: one
            # that timed out or broke after going out may be running (and billed) there.
            unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
            failure = Failure(*failure_of(exc, "request", provider.name), retry=unsent)
            _attempt_failed(call, credential, failure.code)
            return failure
        except (ValueError, TypeError) as exc:
            # Refused before it went out (a header value the transport will not write):
            # nothing of the caller's goes into the headers, so it is this key's doing,
            # and the next key or provider is tried rather than the call failed.
            provider.pool.cannot_send(credential)
            _attempt_failed(call, credential, f"key not sendable ({type(exc).__name__})")
            message = f"Provider '{provider.name}' has no key the hub can send."
            return Failure(502, "upstream_auth_failed", message, retry=True)
        status = response.status_code
        if 200 <= status < 300:
            provider.pool.succeeded(credential)
            return response
        body = await _body(response)
        await response.aclose()
        if refuses_key(provider, status, body):
            provider.pool.refused(credential)
        elif status == 429 or status >= 500:
            # Judged on recent health: the key that just failed gets less traffic for a
            # while, whether it was throttled or its side of the provider is struggling.
            provider.pool.rate_limited(credential, _retry_after(response))
        elif status != 408:
            # The request itself is at fault: another key would get the same answer.
            return Failure(status, "upstream_error", "", upstream_body=body)
        _attempt_failed(call, credential, f"HTTP {status}")
        return Failure(status, "upstream_error", "", retry=True, upstream_body=body)


def _attempt_failed(call: Call, credential: Credential, what: str) -> None:
    logger.warning(
        "call %s: provider %s, key %s, attempt %d failed: %s",
        call.id,
        call.provider,
        credential.masked,
        call.attempts,
        what,
    )


async def _body(response: httpx.Response) -> bytes:
    """An error response's body, or nothing if even that fails to arrive."""
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""


def refuses_key(provider: Adapter, status: int, body: bytes) -> bool:
    """Whether an error answer is about the hub's key rather than the caller's request: the
    adapter reads it from the provider's status and error type or code, never from words in
    the message (which may echo the caller's text: "my monkey" would bench keys)."""
    return 400 <= status < 500 and status != 408 and provider.refuses_key(status, body)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


# What an upstream failure means to the client, by the stage it happened at:
# (status, code, message) for a timeout, then for any other transport failure.
_FAILURES: dict[str, tuple[tuple[int, str, str], tuple[int, str, str]]] = {
    "request": (
        (504, "upstream_timeout", "Provider '{}' did not answer in time."),
        (502, "upstream_unavailable", "Could not reach provider '{}'."),
    ),
    "body": (
        (504, "upstream_timeout", "Provider '{}' stopped answering."),
        (502, "upstream_disconnected", "Provider '{}' closed the connection early."),
    ),
    "stream": (
        (504, "upstream_timeout", "Provider '{}' stalled mid-stream."),
        (502, "upstream_disconnected", "Provider '{}' broke off the stream."),
    ),
}


def failure_of(exc: httpx.HTTPError, stage: str, provider: str | None) -> tuple[int, str, str]:
    """(status, code, message) for a transport failure at `stage` (request, body, stream)."""
    timeout, other = _FAILURES[stage]
    status, code, message = timeout if isinstance(exc, httpx.TimeoutException) else other
    return status, code, message.format(provider)
