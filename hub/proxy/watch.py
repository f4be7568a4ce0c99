"""The hang-up and stopped-reader watch over an exchange under way."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message, Receive

from middleware.call import Call

# The watcher starts this long after the exchange does. A task per request (even plain
# asyncio; an anyio task group cost more than the rest of the request path together) was
# a tenth of the hub's throughput on fast answers, which are done before a hang-up could
# matter; model calls last far longer, and a hang-up is still seen well within 100 ms.
WATCH_AFTER = 0.02


class Watch:
    """Watches an exchange under way for a client that hangs up (receive() says so) or
    stops reading (a send to it waits longer than `send_limit`)."""

    def __init__(
        self, call: Call, task: asyncio.Task[Any], receive: Receive, send_limit: float
    ) -> None:
        self.call = call
        self.task = task
        self.active = True  # the exchange is under way (reset with no await in between)
        self.cancelled = False
        self.watcher: asyncio.Task[None] | None = None
        self.send_limit = send_limit
        # When the send under way began (loop time), None between sends.
        self.send_started: float | None = None
        self.send_timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(WATCH_AFTER, self._start, receive)

    def _start(self, receive: Receive) -> None:
        # Only exchanges that outlast WATCH_AFTER get a watcher task and a send timer: a
        # timer per send cost 2% of a short call's CPU.
        if self.active:
            self.watcher = self.loop.create_task(self.run(receive))
            began = self.send_started
            due = (began if began is not None else self.loop.time()) + self.send_limit
            self.send_timer = self.loop.call_at(due, self._check_send)

    def _check_send(self) -> None:
        if not self.active:
            return
        began = self.send_started
        now = self.loop.time()
        if began is not None and now - began >= self.send_limit:
            self.too_slow()
            return
        # Look again when the send under way (or one starting now) would be over the limit.
        due = (began if began is not None else now) + self.send_limit
        self.send_timer = self.loop.call_at(due, self._check_send)

    def too_slow(self) -> None:
        """The client took nothing of the answer for `send_limit` seconds: end the exchange
        as if it had hung up (the upstream request is closed, what was delivered is billed)."""
        # Also on the last piece of the answer: a client that stops reading there would
        # otherwise hold the exchange as long as any other.
        if self.active and not self.cancelled:
            limit = self.send_limit
            message = f"The client read nothing for {limit:g} s; the answer was cut off."
            self.call.fail("client_too_slow", message)
            self._cut()

    def _cut(self) -> None:
        # Once only (both callers check `cancelled`): a second cancel, a hang-up just after
        # a timeout, would escape the proxy as an error.
        self.call.client_gone = True
        self.cancelled = True
        self.task.cancel()

    def stop(self) -> None:
        self.active = False
        self.timer.cancel()
        if self.send_timer is not None:
            self.send_timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()

    async def run(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                # Servers also report a disconnect once the whole answer is sent: only one
                # before that is a client hanging up.
                if self.active and not self.cancelled and not self.call.answered:
                    self._cut()
                return
