"""The dispatcher: one per deployment at a time delivers the outbox to every sink.

Every hub instance runs one; only the one holding the lease (a row in the database, taken
or renewed by one UPDATE each round) delivers. A holder that dies stops renewing, and
another takes over once the lease expires; a cleanly stopped one releases it at once. Two
holders for a moment (one stalled past its lease) can only send a row twice, with the same
idempotency key: delivery is at least once, and exactly once in effect at a receiver that
de-duplicates by that key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

import httpx

from hub.outbox.backoff import retry_delay
from hub.outbox.config import OutboxSettings, SinkSettings
from hub.outbox.sinks import DeliveryError, Sink, StripeSink, WebhookSink
from hub.outbox.status import sink_lag
from hub.store.outbox import Due, OutboxStore

logger = logging.getLogger("aigne_hub.outbox")
LATE = "not sent: the round ran past half the lease"


class OutboxObserver(Protocol):
    def outbox_delivered(self, sink: str, count: int) -> None: ...
    def outbox_failed(self, sink: str, count: int) -> None: ...
    def outbox_lag(self, sink: str, pending: int, oldest_seconds: float) -> None: ...


def report_id(sink: str, kind: str, account_id: int, period_start: int, ids: list[int]) -> str:
    """A summed report's idempotency key, derived from the rows it covers: the same rows
    always make the same id, and no two reports share a row."""
    covered = ",".join(str(i) for i in sorted(ids))
    digest = hashlib.sha256(f"{sink}|{kind}|{account_id}|{period_start}|{covered}".encode())
    return "sum_" + digest.hexdigest()[:40]


class Dispatcher:
    """Delivers due outbox rows while this instance holds the lease."""

    def __init__(
        self,
        outbox: OutboxStore,
        settings: OutboxSettings,
        *,
        holder: Callable[[], str],
        observer: OutboxObserver | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.outbox = outbox
        self.settings = settings
        self.holder = holder
        self.observer = observer
        self.clock = clock
        self.sinks: list[Sink] = [self._sink(s) for s in settings.sinks]
        self.client = httpx.AsyncClient(timeout=settings.timeout, transport=transport)
        self.leading = False
        self._until = 0.0
        self._task: asyncio.Task[None] | None = None

    def _sink(self, settings: SinkSettings) -> Sink:
        if settings.kind == "stripe":
            return StripeSink(settings, self.outbox.customer)
        return WebhookSink(settings, self.clock)

    async def round(self) -> int:
        """One round: renew (or take) the lease, enroll new rows, deliver what is due;
        the number of deliveries tried."""
        now = self.clock()
        self.leading = await self.outbox.take_lease(self.holder(), now, self.settings.lease_seconds)
        if not self.leading:
            return 0
        # Nothing new is started past half the lease: what is started ends (within
        # `timeout`, at most half the lease) before the lease could pass to another.
        self._until = now + self.settings.lease_seconds / 2
        kinds = {s.settings.name: s.settings.events for s in self.sinks}
        tried = 0
        while await self.outbox.enroll(kinds, self.settings.batch) == self.settings.batch:
            if self.clock() > self._until:  # a backlog (sinks configured late)
                return 1
        for sink in self.sinks:
            tried += await self._deliver(sink, now)
        await self._measure()
        return tried

    async def _deliver(self, sink: Sink, now: float) -> int:
        name, batch = sink.settings.name, self.settings.batch
        summed = sink.settings.mode == "summed"
        if summed:
            await self._form_reports(sink.settings, now)
            due = await self.outbox.due_reports(name, now, batch)
        else:
            due = await self.outbox.due(name, now, batch)
        if not due:
            return 0
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(item: Due) -> str | None:
            async with gate:
                if self.clock() > self._until:
                    return LATE  # left due, for the next round under a renewed lease
                try:
                    await sink.send(self.client, item)
                    return None
                except DeliveryError as exc:
                    return str(exc)

        results = await asyncio.gather(*(one(item) for item in due))
        tried = [(i, error) for i, error in zip(due, results, strict=True) if error is not LATE]
        delivered = [item.key for item, error in tried if error is None]
        failed = [
            (item.key, self.clock() + self._delay(item.attempts + 1), error)
            for item, error in tried
            if error is not None
        ]
        await self.outbox.record(
            name, summed=summed, delivered=delivered, failed=failed, now=self.clock()
        )
        if failed:
            logger.warning(
                "outbox: %d of %d deliveries to sink %s failed (first: %s)",
                len(failed),
                len(tried),
                name,
                failed[0][2],
            )
        if self.observer is not None:
            self.observer.outbox_delivered(name, len(delivered))
            self.observer.outbox_failed(name, len(failed))
        return len(due)

    def _delay(self, attempts: int) -> float:
        s = self.settings
        return retry_delay(attempts, s.retry_base_seconds, s.retry_max_seconds)

    async def _form_reports(self, sink: SinkSettings, now: float) -> None:
        """Count the rows of closed periods into reports, before any is sent: a report's
        rows (and so its id) never change, whatever retries follow."""
        period = sink.period_seconds
        before = (now - self.settings.summed_grace_seconds) // period * period
        rows = await self.outbox.unreported(sink.name, before, self.settings.batch * 50)
        groups: dict[tuple[str, int, int], list[int]] = defaultdict(list)
        for outbox_id, kind, account_id, created_at in rows:
            start = int(created_at) // period * period
            groups[(kind, int(account_id), start)].append(int(outbox_id))
        reports = {report_id(sink.name, *key, ids): ids for key, ids in groups.items()}
        if reports:
            await self.outbox.assign(sink.name, reports)

    async def _measure(self) -> None:
        if self.observer is None:
            return
        names = [sink.settings.name for sink in self.sinks]
        for name, (pending, age) in (await sink_lag(self.outbox, names, self.clock())).items():
            self.observer.outbox_lag(name, pending, age)

    # -- the task run beside the app --------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aigne-hub-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            if self.leading:  # the next instance need not wait out the lease
                await self.outbox.release_lease(self.holder())
        except Exception:
            logger.exception("releasing the outbox lease failed; it expires on its own")
        await self.client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.round()
            except Exception:
                logger.exception("outbox round failed; trying again")
                busy = 0
            if not busy:
                if not self.leading and self.observer is not None:
                    for sink in self.sinks:  # the holder reports the lag: summed, it counts once
                        self.observer.outbox_lag(sink.settings.name, 0, 0.0)
                await asyncio.sleep(self.settings.poll_seconds)
