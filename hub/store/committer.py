"""Group commit: one writer owns the connection and commits concurrent callers' work together.

Each caller hands in an operation and is answered only once the transaction holding it is
committed, so an acknowledged write is durable; a batch costs one commit (and, on SQLite,
one thread hand-off) however many calls it carries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from hub.store.raw import Backend, Bulk, Operation, Work

T = TypeVar("T")

logger = logging.getLogger("aigne_hub.store")

_STOP: Any = object()


class GroupCommitter:
    def __init__(self, backend: Backend, *, max_batch: int = 512) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="aigne-hub-group-commit")

    async def close(self) -> None:
        """Commit everything queued so far, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(_STOP)
        await self._task
        self._task = None

    async def run(self, work: Callable[[], Operation[T]] | Bulk) -> T:
        """Run the work in the next transaction; returns once it is committed."""
        if self._task is None:
            raise RuntimeError("the store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((work, future))
        return await future

    def submit(self, factory: Work) -> None:
        """Queue the operation without waiting; later operations are committed after it."""
        if self._task is None:
            raise RuntimeError("the store is not open")
        self._queue.put_nowait((factory, None))

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if _STOP in batch:
                stopping = True
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                batch = [item for item in batch if item is not _STOP]
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Work, asyncio.Future[Any] | None]]) -> None:
        try:
            outcomes = await self.backend.run_batch([factory for factory, _ in batch])
        except Exception as exc:  # the connection itself failed
            logger.error("store batch failed: %r", exc)
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future is None:
                if outcome.error is not None:
                    logger.error("queued store write failed: %r", outcome.error)
            elif not future.done():
                if outcome.error is not None:
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome.value)
