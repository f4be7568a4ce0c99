"""SQL compiled once per dialect, run on the driver connection under `databases`.

`databases` compiles every statement on every call and, on SQLite, opens a new thread per
statement outside a held connection. The hot path instead holds one connection and runs
statements compiled at start-up straight on its driver (aiosqlite or asyncpg).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement


def dialect_for(scheme: str) -> Dialect:
    """The SQLAlchemy dialect whose paramstyle matches our driver for a URL scheme."""
    if scheme.startswith("sqlite"):
        return sqlite.dialect(paramstyle="qmark")
    if scheme.startswith("postgres"):
        from sqlalchemy.dialects.postgresql import asyncpg

        return asyncpg.dialect()  # type: ignore[no-untyped-call]
    raise ValueError(f"unsupported database scheme {scheme!r}: use sqlite:// or postgresql://")


class Prepared:
    """A statement compiled for one dialect; `args(**values)` orders its parameters."""

    __slots__ = ("sql", "order", "fixed")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order: tuple[str, ...] = tuple(getattr(compiled, "positiontup", None) or ())
        # Literals in the statement (`balance=0`) compile to parameters with a value.
        self.fixed = {k: v for k, v in compiled.params.items() if v is not None}

    def args(self, values: dict[str, Any]) -> tuple[Any, ...]:
        fixed = self.fixed
        return tuple(values[n] if n in values else fixed[n] for n in self.order)


class RawConnection(Protocol):
    async def execute(self, stmt: Prepared, values: dict[str, Any]) -> int: ...
    async def fetchone(self, stmt: Prepared, values: dict[str, Any]) -> Sequence[Any] | None: ...
    async def fetchall(self, stmt: Prepared, values: dict[str, Any]) -> list[Sequence[Any]]: ...
    async def begin(self) -> None: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...


class SqliteRaw:
    """An aiosqlite connection in autocommit mode (as `databases` opens it)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, stmt: Prepared, values: dict[str, Any]) -> int:
        cursor = await self.conn.execute(stmt.sql, stmt.args(values))
        count = int(cursor.rowcount)
        await cursor.close()
        return count

    async def fetchone(self, stmt: Prepared, values: dict[str, Any]) -> Sequence[Any] | None:
        cursor = await self.conn.execute(stmt.sql, stmt.args(values))
        row = await cursor.fetchone()
        await cursor.close()
        return row  # type: ignore[no-any-return]

    async def fetchall(self, stmt: Prepared, values: dict[str, Any]) -> list[Sequence[Any]]:
        cursor = await self.conn.execute(stmt.sql, stmt.args(values))
        rows = await cursor.fetchall()
        await cursor.close()
        return list(rows)

    async def begin(self) -> None:
        await self.conn.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        await self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        await self.conn.execute("ROLLBACK")


class PostgresRaw:
    """An asyncpg connection; statements are prepared and cached by asyncpg itself."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, stmt: Prepared, values: dict[str, Any]) -> int:
        status = await self.conn.execute(stmt.sql, *stmt.args(values))
        tail = str(status).rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetchone(self, stmt: Prepared, values: dict[str, Any]) -> Sequence[Any] | None:
        row = await self.conn.fetchrow(stmt.sql, *stmt.args(values))
        return None if row is None else tuple(row)

    async def fetchall(self, stmt: Prepared, values: dict[str, Any]) -> list[Sequence[Any]]:
        return [tuple(r) for r in await self.conn.fetch(stmt.sql, *stmt.args(values))]

    async def begin(self) -> None:
        await self.conn.execute("BEGIN")

    async def commit(self) -> None:
        await self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        await self.conn.execute("ROLLBACK")
