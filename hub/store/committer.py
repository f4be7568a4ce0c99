"""Group commit: one task owns the connection and commits concurrent callers' work together.

Each caller hands in an operation and is answered only once the transaction holding it is
committed, so an acknowledged write is durable; a batch costs one commit however many
calls it carries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hub.store.raw import RawConnection

T = TypeVar("T")
Operation = Callable[[RawConnection], Awaitable[Any]]

logger = logging.getLogger("aigne_hub.store")

_STOP = object()


class GroupCommitter:
    def __init__(self, conn: RawConnection, *, max_batch: int = 256) -> None:
        self.conn = conn
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

    async def run(self, op: Callable[[RawConnection], Awaitable[T]]) -> T:
        """Run `op` in the next transaction; returns once it is committed."""
        if self._task is None:
            raise RuntimeError("the store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, future))
        return await future

    def submit(self, op: Operation) -> None:
        """Queue `op` without waiting; later operations are committed after it."""
        if self._task is None:
            raise RuntimeError("the store is not open")
        self._queue.put_nowait((op, None))

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if _STOP in batch:
                stopping = True
                batch = [item for item in batch if item is not _STOP]
                while not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is not _STOP:
                        batch.append(item)
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Operation, asyncio.Future[Any] | None]]) -> None:
        try:
            await self.conn.begin()
            results = [await op(self.conn) for op, _ in batch]
            await self.conn.commit()
        except Exception:
            await self._safe_rollback()
            # One bad operation must not fail its neighbours: retry each on its own.
            for item in batch:
                await self._commit_one(item)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future is not None and not future.done():
                future.set_result(result)

    async def _commit_one(self, item: tuple[Operation, asyncio.Future[Any] | None]) -> None:
        op, future = item
        try:
            await self.conn.begin()
            result = await op(self.conn)
            await self.conn.commit()
        except Exception as exc:
            await self._safe_rollback()
            if future is None:
                logger.error("queued store write failed: %r", exc)
            elif not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)

    async def _safe_rollback(self) -> None:
        try:
            await self.conn.rollback()
        except Exception:  # already rolled back, or the connection is gone
            pass
