"""The Proxy ASGI app: one request upstream, the answer back in the client's format."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx
from starlette.types import Message, Receive, Scope, Send

from hub.dialects.base import ClientFormat
from hub.dialects.openai_chat import OPENAI_CHAT
from hub.priced_fields import refused_field
from hub.providers.base import Adapter
from hub.providers.openai import error_message
from hub.providers.registry import ProviderRegistry
from hub.proxy.connect import Connector, Failure, refuses_key
from hub.proxy.relay import ensure_usage
from hub.proxy.stream import relay_for, stream
from hub.proxy.watch import Watch
from hub.proxy.whole import refuse, whole
from middleware.call import Call, get_call
from middleware.errors import HubError, send_error

logger = logging.getLogger("aigne_hub.proxy")


def client_format(call: Call) -> ClientFormat:
    """The format the call's client speaks (routes given none speak OpenAI chat)."""
    fmt: ClientFormat = call.format if call.format is not None else OPENAI_CHAT
    return fmt


class Proxy:
    """The ASGI app behind the middlewares for the model routes."""

    def __init__(
        self,
        registry: ProviderRegistry,
        transport: httpx.AsyncBaseTransport,
        pricer: Callable[[Call], Awaitable[int]] | None = None,
        client_send_timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        # How long one piece of the answer may wait for the client to take it: a client that
        # stops reading but keeps its socket open would otherwise hold the upstream
        # connection, and its credit hold, for as long as it likes.
        self.client_send_timeout = client_send_timeout
        # What a finished call costs, for client formats that show it in the answer (AIGNE);
        # the charge itself is still made by the billing layer.
        self.pricer = pricer or _free
        # The transport, not an AsyncClient: the client's cookie, redirect and auth machinery
        # is all behaviour a proxy must not have, and cost a sixth of the hub's CPU.
        self.transport = transport
        self.connector = Connector(transport)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        if call is None:
            if scope["method"] != "POST":
                await send_error(send, 405, "method_not_allowed", "Use POST for this route.")
            else:
                await send_error(send, 500, "misconfigured", "The proxy needs the Call middleware.")
            return
        providers = await self._providers(send, call)
        if providers is None:
            return
        # A hung-up client is only visible through receive(): a watcher task waits on it and,
        # if the client leaves mid-exchange, cancels the exchange, which closes the upstream
        # request at once so the provider stops generating.
        task = asyncio.current_task()
        assert task is not None
        watch = Watch(call, task, receive, self.client_send_timeout)
        clock = watch.loop.time

        async def send_in_time(message: Message) -> None:
            # Two stores a send: the watch's one timer does the checking (see Watch).
            watch.send_started = clock()
            try:
                await send(message)
            finally:
                watch.send_started = None

        try:
            await self._exchange(send_in_time, call, providers)
        except asyncio.CancelledError:
            if not watch.cancelled or task.uncancel() > 0:
                raise  # cancelled by someone else too
        finally:
            watch.stop()
        if call.client_gone and call.usage is None and call.sent_upstream:
            # Hung up on after the provider had the prompt, before an answer or a stream
            # began (a started stream billed itself as it ended): the provider bills the
            # prompt, so the caller pays for it too.
            ensure_usage(call, complete=False, kind=self._kind(call))

    async def _providers(self, send: Send, call: Call) -> list[Adapter] | None:
        """The providers that may serve the call, in order; None once refused."""
        if call.provider is None:
            resolved = self.registry.resolve(call.model)
            if resolved is None:
                await send_error(
                    send,
                    404,
                    "unknown_model",
                    f"The model '{call.model}' is not served by this hub.",
                    "model",
                )
                return None
            call.provider, call.upstream_model = resolved
        providers = self.registry.route(call.model, call.provider)
        # A format may refuse what it cannot carry to some provider kinds (Anthropic's
        # server tools to an OpenAI-compatible provider, say): an optional hook.
        format_refusal = getattr(client_format(call), "refusal", None)
        for provider in providers:
            refused = refused_field(call, provider.kind)
            if refused is not None:
                param, why = refused
                message = f"'{param}' is not allowed through this hub: {why}."
            elif (refusal := provider.fields.check(call)) is not None:
                # A field this provider cannot carry: refused before anything goes upstream.
                param, message = refusal.param, refusal.message
            elif (found := _format_refusal(format_refusal, call, provider)) is not None:
                param, message = str(found.param), found.message
            else:
                continue
            call.fail("unsupported_parameter", message)
            await send_error(send, 400, "unsupported_parameter", message, param)
            return None
        return providers

    async def _exchange(self, send: Send, call: Call, providers: list[Adapter]) -> None:
        connected = await self.connector.connect(call, providers)
        if isinstance(connected, Failure):
            if connected.upstream_body is not None:
                await self._upstream_error(send, call, connected.status, connected.upstream_body)
            else:
                await refuse(send, call, connected.status, connected.code, connected.message)
            return
        response, provider = connected
        fmt = client_format(call)
        try:
            if call.stream and call.call_type == "chatCompletion":
                relay = relay_for(call, provider, fmt, self._scrub)
                await stream(send, call, response, relay, self._kind(call), fmt, self.pricer)
            else:
                await whole(send, call, response, provider, fmt, self.pricer)
        finally:
            # Also when the client left: closing the socket is what stops the provider.
            await response.aclose()

    def _scrub(self, text: str) -> str:
        # Read afresh (error paths only): keys stored in the database join after start-up.
        for secret in self.registry.secrets():
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        return text

    async def _upstream_error(self, send: Send, call: Call, status: int, body: bytes) -> None:
        name = call.provider
        message = self._scrub(error_message(body)) if body else "no message"
        if refuses_key(self.registry.get(str(name)), status, body):
            logger.warning("provider %s rejected its credential: %s %s", name, status, message)
            await refuse(
                send,
                call,
                502,
                "upstream_auth_failed",
                f"Provider '{name}' rejected the hub's credential (HTTP {status}).",
            )
            return
        code = "upstream_rate_limited" if status == 429 else "upstream_error"
        client_status = status if 400 <= status <= 599 else 502
        await refuse(send, call, client_status, code, f"Provider '{name}': {message}")

    def _kind(self, call: Call) -> str | None:
        """The protocol of the provider the call went to, which counts its prompt."""
        provider = self.registry.providers.get(call.provider or "")
        return provider.kind if provider is not None else None


async def _free(call: Call) -> int:
    return 0


def _format_refusal(
    refusal: Callable[[Call, str], HubError | None] | None, call: Call, provider: Adapter
) -> HubError | None:
    """What the call's format cannot carry to this provider, unless its operator lets
    such fields drop (then logged by name: the normalized request leaves them out). What
    the provider's own protocol is refused (it would cost above the rate) is never let go."""
    found = refusal(call, provider.kind) if refusal is not None else None
    if found is not None and provider.fields.drop and call.dialect != provider.kind:
        logger.info("call %s: provider %s drops %s", call.id, provider.name, found.param)
        return None
    return found
