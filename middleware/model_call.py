"""Record every model call: `processing` before the upstream request, settled before its end."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from middleware.call import Call, get_call
from middleware.errors import answer_unhandled, send_store_unavailable
from middleware.money import credits_text
from middleware.ports import (
    SETTLE_REFUSED,
    BudgetExceeded,
    CallLog,
    CallObserver,
    InsufficientCredit,
    SettleRefused,
)

logger = logging.getLogger("aigne_hub.model_call")

SETTLE_RETRY_PAUSES = (0.05, 0.25, 1.0, 3.0)


class ModelCallMiddleware:
    """Records the call before it goes upstream, and settles it before the answer ends.

    The `processing` row is written (and committed) before the inner app runs: a call that
    reached a provider always has a record, even if the hub is killed a moment later.

    The settle (final record + meter event + balance change + release of the hold) is
    committed before the last message of the answer is handed to the server: the last
    bytes of a whole body, the final event of a stream. This puts one group commit between
    the last chunk and the client, on purpose: settled after the answer, a hub killed in
    between would have given away a call the client received in full. Calls that end
    otherwise (a hang-up, an error inside the hub) are settled when the app returns.
    """

    def __init__(
        self, app: ASGIApp, *, log: CallLog, observers: Sequence[CallObserver] = ()
    ) -> None:
        self.app = app
        self.log = log
        self.observers = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = get_call(scope)
        if call is None:
            await self.app(scope, receive, send)
            return
        try:
            # Raises InsufficientCredit or BudgetExceeded (for the credit check outside)
            # before anything is written.
            await self.log.open_call(call)
        except (InsufficientCredit, BudgetExceeded):
            raise
        except Exception as exc:
            # The store did not answer (down, restarting, locked too long): the call cannot
            # be recorded, so it is not made; nothing went upstream and nothing is charged.
            logger.error("call %s could not be recorded: %r", call.id, exc)
            await send_store_unavailable(send, "record this call")
            return
        for observer in self.observers:
            observer.opened(call)
        settled = False

        async def settle() -> bool:
            nonlocal settled
            settled = True
            call.ended_clock = time.perf_counter()
            _finish(call)
            # Not shielded: a CallLog queues the settle before its first await (see ports),
            # so even a cancelled request is settled, without a cancel scope per call.
            written = await self._settle(call)
            for observer in self.observers:
                observer.settled(call)
            return written

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.http_status = message["status"]
            else:
                if call.first_byte_clock is None and message.get("body"):
                    call.first_byte_clock = time.perf_counter()
                if not message.get("more_body"):
                    # Marked before the settle: a client that leaves while it commits is
                    # not a hang-up (the proxy's watcher cuts only unanswered calls), the
                    # call is settled as it is answered.
                    call.answered = True
                    if not await settle():
                        # Not charged, so not finished: the client never gets the end of
                        # an answer the ledger does not hold (the server cuts it off).
                        return
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if not settled:
                call.fail("internal_error", f"{type(exc).__name__} inside the hub")
            # Answered here, so the call is settled as failed, with one log line.
            await answer_unhandled(scope, send, exc, call.request_id)
        finally:
            if not settled:
                await settle()

    async def _settle(self, call: Call) -> bool:
        """Whether the call's record is written (as settled, or as refused)."""
        # A settle is idempotent by contract, so retrying through a database hiccup (a
        # dropped connection, a lock held elsewhere) can never charge twice. A record the
        # database refuses is not retried: it would be refused again.
        for pause in (*SETTLE_RETRY_PAUSES, None):
            try:
                await self.log.settle(call)
                return True
            except SettleRefused as refused:
                _refused(call, refused.reason)
                return True
            except Exception as exc:
                if pause is None:
                    # Left `processing`, its credit held: settled `hub_crashed` (the hold
                    # released) by an instance's recovery (hub.store.instances) once no
                    # live instance owns it.
                    logger.exception(
                        "call %s could not be settled: %s credits for account %s are not recorded",
                        call.id,
                        call.charge,
                        call.identity.account_id,
                    )
                    return False
                logger.warning("settling call %s failed (%r); retrying", call.id, exc)
                await anyio.sleep(pause)
        raise AssertionError("unreachable: the last attempt returns")


def _refused(call: Call, reason: str) -> None:
    """The store recorded the call failed at no charge: say so loudly, and make the call
    (as the observers see it) what was recorded."""
    logger.error(
        "call %s of account %s was recorded failed (%s), its charge of %s credits not billed: %s",
        call.id,
        call.identity.account_id,
        SETTLE_REFUSED,
        credits_text(call.charge or 0),
        reason,
    )
    call.status = "failed"
    call.error_code = SETTLE_REFUSED
    call.error_message = reason[:1000]
    call.charge = 0


def _finish(call: Call) -> None:
    """Decide the final status from what the response and the proxy reported."""
    if call.client_gone:
        call.fail("client_disconnected", "The client closed the connection before the end.")
    status = call.http_status
    if status is not None and status >= 400:
        call.fail(f"http_{status}", f"Answered with HTTP {status}.")
    if status is None:
        call.fail("no_response", "No response was sent.")
    call.status = "failed" if call.error_code is not None else "success"
