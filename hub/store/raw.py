"""SQL compiled once per dialect, and the two backends that run batches of it.

Store operations are written once, as generators that yield statements and receive their
results. The SQLite backend drives a whole batch inside its own thread — one hand-off per
batch instead of one per statement — and the PostgreSQL backend drives the same
generators on an asyncpg connection held through `databases`.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

T = TypeVar("T")


def dialect_for(scheme: str) -> Dialect:
    """The SQLAlchemy dialect whose paramstyle matches our driver for a URL scheme."""
    if scheme.startswith("sqlite"):
        return sqlite.dialect(paramstyle="qmark")
    if scheme.startswith("postgres"):
        from sqlalchemy.dialects.postgresql import asyncpg

        return asyncpg.dialect()  # type: ignore[no-untyped-call]
    raise ValueError(f"unsupported database scheme {scheme!r}: use sqlite:// or postgresql://")


class Prepared:
    """A statement compiled for one dialect; `args(values)` orders its parameters."""

    __slots__ = ("sql", "order", "fixed", "params", "_pick")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order: tuple[str, ...] = tuple(getattr(compiled, "positiontup", None) or ())
        # Literals in the statement (`balance=0`) compile to parameters with a value.
        self.fixed = {k: v for k, v in compiled.params.items() if v is not None}
        # Every value bound in the statement itself (an ad-hoc query's filters).
        self.params = dict(compiled.params)
        # itemgetter orders the values in C: this runs for every statement of every call.
        self._pick = operator.itemgetter(*self.order) if len(self.order) > 1 else None

    def args(self, values: dict[str, Any]) -> tuple[Any, ...]:
        if self.fixed:
            values = {**self.fixed, **values}
        if self._pick is not None:
            return self._pick(values)  # type: ignore[no-any-return]
        return tuple(values[n] for n in self.order)


@dataclass(frozen=True, slots=True)
class Exec:
    """Run a statement; the operation receives the number of rows it changed."""

    stmt: Prepared
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Run a query; the operation receives the first row (or None), or all rows."""

    stmt: Prepared
    values: dict[str, Any]
    all: bool = False


Step = Exec | Fetch
Operation = Generator[Step, Any, T]
# A factory, so a batch that fails can replay each operation on its own.
OperationFactory = Callable[[], Operation[Any]]


@dataclass(frozen=True, slots=True)
class Bulk:
    """A lone write whose result is only success or failure.

    The per-call writes (open, settle) are these: within a batch, neighbouring Bulk writes
    of one statement run as a single executemany. `phase` orders them within such a run
    (opens before settles), so a call's settle never overtakes its own open.
    """

    stmt: Prepared
    values: dict[str, Any]
    phase: int = 0


Work = OperationFactory | Bulk


def single(step: Step) -> Operation[Any]:
    """An operation of one statement, answering with its result."""
    return (yield step)


def rows_changed(step: Exec) -> Operation[int]:
    """An operation of one write, answering with the number of rows it changed."""
    changed: int = yield step
    return changed


def plan(batch: Sequence[Work]) -> list[tuple[int, OperationFactory] | list[Bulk]]:
    """The batch as (position, operation) pairs and groups of Bulk writes of one statement."""
    planned: list[tuple[int, OperationFactory] | list[Bulk]] = []
    run: list[Bulk] = []

    def close_run() -> None:
        run.sort(key=lambda b: b.phase)  # stable: queue order holds within a phase
        for bulk in run:
            last = planned[-1] if planned else None
            if isinstance(last, list) and last[0].stmt is bulk.stmt:
                last.append(bulk)
            else:
                planned.append([bulk])
        run.clear()

    for position, work in enumerate(batch):
        if isinstance(work, Bulk):
            run.append(work)
        else:
            close_run()
            planned.append((position, work))
    close_run()
    return planned


@dataclass(slots=True)
class Outcome:
    value: Any = None
    error: BaseException | None = None


def refused_by_database(exc: BaseException) -> bool:
    """Whether a write failed for what it holds (a value the column cannot take, a
    constraint), so that running it again fails again — as opposed to a dropped connection
    or a lock, which a retry can outlast."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.ProgrammingError):
        return True
    # sqlite3 binding a huge int (OverflowError) or a lone surrogate (UnicodeEncodeError),
    # asyncpg encoding an argument its type cannot hold (asyncpg's client-side DataError).
    if isinstance(exc, ValueError | OverflowError | TypeError):
        return True
    # A PostgreSQL data exception (class 22) or integrity violation (class 23).
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")


class Backend(Protocol):
    async def run_batch(self, batch: Sequence[Work]) -> list[Outcome]: ...
    async def close(self) -> None: ...


class SqliteBackend:
    """One sqlite3 connection; statements run on the event loop, the fsync off it.

    Measured here: running batches in a worker thread made the thread and the event loop
    fight over the GIL on every row (sqlite3 releases it around each step), which cost more
    than the SQL itself. Statements take ~20 us a row in C, so they run inline, and only a
    COMMIT that must wait for the disk (synchronous=FULL) goes to the thread, where it
    holds no GIL while it waits. Waiting for another process's write lock happens in
    asyncio sleeps, never in SQLite's busy handler, which would freeze the loop.
    """

    def __init__(self, path: str, synchronous: str, lock_timeout: float = 10.0) -> None:
        self.path = path
        self.synchronous = synchronous
        self.lock_timeout = lock_timeout
        self._fsync = synchronous in ("FULL", "EXTRA")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigne-hub-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=0")
        # The connection's first statement reads the schema, which waits for a lock while
        # another process starting at the same moment holds it (seen as "database is
        # locked" at start-up with several workers): waited for here like a write lock.
        # 64 MiB of page cache (the default is 2 MiB): the indexes a call touches stay hot.
        await self._when_unlocked(conn, "PRAGMA cache_size=-65536")
        await self._when_unlocked(conn, f"PRAGMA synchronous={self.synchronous}")
        self._conn = conn

    async def _begin(self, conn: sqlite3.Connection) -> None:
        await self._when_unlocked(conn, "BEGIN IMMEDIATE")

    async def _when_unlocked(self, conn: sqlite3.Connection, statement: str) -> None:
        """Run a statement that needs a lock another process may hold, retrying in asyncio
        sleeps until `lock_timeout`."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            try:
                conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def run_batch(self, batch: Sequence[Work]) -> list[Outcome]:
        conn = self._conn
        assert conn is not None
        try:
            await self._begin(conn)
        except sqlite3.Error as exc:  # the lock never came: the whole batch fails alike
            return [Outcome(error=exc) for _ in batch]
        try:
            changes = conn.total_changes
            outcomes = [Outcome() for _ in batch]
            for step in plan(batch):
                if isinstance(step, list):
                    conn.executemany(step[0].stmt.sql, [b.stmt.args(b.values) for b in step])
                else:
                    position, factory = step
                    outcomes[position].value = self._drive(conn, factory())
            if self._fsync and conn.total_changes != changes:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._thread, conn.execute, "COMMIT")
            else:
                conn.execute("COMMIT")
            return outcomes
        except Exception:
            _rollback(conn)
        # One bad write must not fail its neighbours: replay each on its own (rare path).
        outcomes = []
        for work in batch:
            try:
                await self._begin(conn)
                if isinstance(work, Bulk):
                    conn.execute(work.stmt.sql, work.stmt.args(work.values))
                    value = None
                else:
                    value = self._drive(conn, work())
                conn.execute("COMMIT")
                outcomes.append(Outcome(value))
            except Exception as exc:
                _rollback(conn)
                outcomes.append(Outcome(error=exc))
        return outcomes

    @staticmethod
    def _drive(conn: sqlite3.Connection, op: Operation[Any]) -> Any:
        try:
            step = next(op)
            while True:
                cursor = conn.execute(step.stmt.sql, step.stmt.args(step.values))
                if isinstance(step, Exec):
                    result: Any = cursor.rowcount
                else:
                    result = cursor.fetchall() if step.all else cursor.fetchone()
                cursor.close()
                step = op.send(result)
        except StopIteration as stop:
            return stop.value

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._thread.shutdown(wait=True)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class PostgresBackend:
    """One asyncpg connection (asyncpg prepares and caches each statement it sees).

    A connection that drops is replaced on the next batch; a batch that failed because it
    dropped before COMMIT was sent is run again on the new connection, since nothing of it
    was applied. A drop during COMMIT is ambiguous, so that batch fails instead.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    async def start(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.url)

    async def _connection(self) -> Any:
        if self.conn is None or self.conn.is_closed():
            self.conn = None
            await self.start()
        return self.conn

    async def run_batch(self, batch: Sequence[Work]) -> list[Outcome]:
        for attempt in (1, 2):
            try:
                conn = await self._connection()
            except Exception as exc:  # the server is down: fail now, try again next batch
                return [Outcome(error=exc) for _ in batch]
            committing = False
            try:
                outcomes = [Outcome() for _ in batch]
                await conn.execute("BEGIN")
                for step in plan(batch):
                    if isinstance(step, list):
                        args = [b.stmt.args(b.values) for b in step]
                        await conn.executemany(step[0].stmt.sql, args)
                    else:
                        position, factory = step
                        outcomes[position].value = await self._drive(conn, factory())
                committing = True
                await conn.execute("COMMIT")
                return outcomes
            except Exception as exc:
                if conn.is_closed():
                    if committing or attempt == 2:
                        return [Outcome(error=exc) for _ in batch]
                    continue  # nothing was applied: run the batch again on a new connection
                await _pg_rollback(conn)
                break
        # One bad write must not fail its neighbours: replay each on its own.
        outcomes = []
        for work in batch:
            try:
                await conn.execute("BEGIN")
                if isinstance(work, Bulk):
                    await conn.execute(work.stmt.sql, *work.stmt.args(work.values))
                    value = None
                else:
                    value = await self._drive(conn, work())
                await conn.execute("COMMIT")
                outcomes.append(Outcome(value))
            except Exception as exc:
                await _pg_rollback(conn)
                outcomes.append(Outcome(error=exc))
        return outcomes

    @staticmethod
    async def _drive(conn: Any, op: Operation[Any]) -> Any:
        try:
            step = next(op)
            while True:
                args = step.stmt.args(step.values)
                if isinstance(step, Exec):
                    status = await conn.execute(step.stmt.sql, *args)
                    tail = str(status).rsplit(" ", 1)[-1]
                    result: Any = int(tail) if tail.isdigit() else 0
                elif step.all:
                    result = [tuple(r) for r in await conn.fetch(step.stmt.sql, *args)]
                else:
                    row = await conn.fetchrow(step.stmt.sql, *args)
                    result = None if row is None else tuple(row)
                step = op.send(result)
        except StopIteration as stop:
            return stop.value

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()
        self.conn = None


async def _pg_rollback(conn: Any) -> None:
    if not conn.is_closed():
        try:
            await conn.execute("ROLLBACK")
        except Exception:  # no transaction open, or the connection just went
            pass
