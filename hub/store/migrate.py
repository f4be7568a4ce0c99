"""Versioned schema migrations, run on start and by `aigne-hub db upgrade`."""

from __future__ import annotations

from collections.abc import Callable

from databases import Database
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from hub.store import schema

# The table of versions: append, never edit a released step.
Migration = Callable[[Dialect], list[str]]


def _v1_initial(dialect: Dialect) -> list[str]:
    statements: list[str] = []
    for table in schema.metadata.sorted_tables:
        if table is schema.schema_version:
            continue
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index).compile(dialect=dialect)))
    return statements


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "initial schema", _v1_initial),
]
LATEST = MIGRATIONS[-1][0]

# Serializes concurrent starts of several instances against one PostgreSQL.
_PG_LOCK_ID = 0x41494748


async def current_version(database: Database, dialect: Dialect) -> int:
    """The schema version of the database, 0 when it is empty."""
    if dialect.name == "sqlite":
        found = await database.fetch_val(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_version'"
        )
    else:
        found = await database.fetch_val("SELECT to_regclass('schema_version') IS NOT NULL")
    if not found:
        return 0
    version = await database.fetch_val("SELECT max(version) FROM schema_version")
    return int(version or 0)


async def upgrade(database: Database, dialect: Dialect) -> list[int]:
    """Apply every migration newer than the database; returns the versions applied."""
    applied: list[int] = []
    async with database.transaction():
        if dialect.name == "postgresql":
            await database.execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK_ID})")
        version = await current_version(database, dialect)
        if version == 0:
            await database.execute(str(CreateTable(schema.schema_version).compile(dialect=dialect)))
            await database.execute("INSERT INTO schema_version (version) VALUES (0)")
        if version > LATEST:
            raise RuntimeError(
                f"the database is at schema version {version}, newer than this hub ({LATEST})"
            )
        for number, _, migrate in MIGRATIONS:
            if number <= version:
                continue
            for statement in migrate(dialect):
                await database.execute(statement)
            await database.execute(f"UPDATE schema_version SET version = {number}")
            applied.append(number)
    return applied
