"""Versioned schema migrations, run on start and by `aigne-hub db upgrade`."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from databases import Database
from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from hub.bounds import MAX_BALANCE
from hub.store import outbox_sql, schema
from hub.store.budget_migration import v14_budgets
from hub.store.grant_migration import v15_grants_by_trigger

# The table of versions: append, never edit a released step.
Migration = Callable[[Dialect], list[str]]


def _v1_initial(dialect: Dialect) -> list[str]:
    statements: list[str] = []
    for table in schema.metadata.sorted_tables:
        if table is schema.schema_version or table.name in _TABLES_ADDED_LATER:
            continue
        statements.append(str(CreateTable(_as_in_v1(table)).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name not in _INDEXES_ADDED_LATER:
                statements.append(str(CreateIndex(index).compile(dialect=dialect)))
    return statements + _meter_triggers(dialect)


# The ledger is written by the database itself, in the statement that settles a call: when a
# model_calls row leaves `processing` (or is written already final) with a non-zero charge,
# a meter event is inserted and the balance moved. The call record, the ledger row and the
# balance can therefore never disagree, and a settle that finds the row already final (a
# retry) fires nothing. meter_events.call_id is unique as a second guard.
_METER = {
    "sqlite": """
CREATE TRIGGER model_calls_meter_{name} AFTER {event} ON model_calls
WHEN {when}
BEGIN
    INSERT INTO meter_events (account_id, call_id, amount, created_at)
    VALUES (NEW.account_id, NEW.id, NEW.credits, COALESCE(NEW.response_at, NEW.request_at));
    UPDATE accounts SET balance = balance - NEW.credits WHERE id = NEW.account_id;
END""",
    "postgresql": """
CREATE TRIGGER model_calls_meter_{name} AFTER {event} ON model_calls
FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION aigne_hub_meter_call()""",
}
_PG_METER_FUNCTION = """
CREATE OR REPLACE FUNCTION aigne_hub_meter_call() RETURNS trigger AS $$
BEGIN
    INSERT INTO meter_events (account_id, call_id, amount, created_at)
    VALUES (NEW.account_id, NEW.id, NEW.credits, COALESCE(NEW.response_at, NEW.request_at));
    UPDATE accounts SET balance = balance - NEW.credits WHERE id = NEW.account_id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql"""


def _meter_triggers(dialect: Dialect) -> list[str]:
    final = "NEW.status <> 'processing' AND NEW.credits <> 0"
    cases = [
        ("update", "UPDATE", f"OLD.status = 'processing' AND {final}"),
        ("insert", "INSERT", final),
    ]
    template = _METER[dialect.name]
    triggers = [template.format(name=n, event=e, when=w) for n, e, w in cases]
    return ([_PG_METER_FUNCTION] if dialect.name == "postgresql" else []) + triggers


LIMIT_COLUMNS = ("limit_rpm", "limit_tpm", "limit_concurrent")
BUDGET_COLUMNS = ("budget", "budget_period", "budget_start", "budget_spent")
_ADDED_LATER = {
    "model_calls": (
        "usage_estimated",
        "attempts",
        "credential",
        "cache_write_tokens",
        "instance_id",
        "prompt_estimate",
        "held",
        "key_held",
        "client_format",
    ),
    "ai_model_rates": ("cache_write_rate",),
    "accounts": ("session_epoch", *LIMIT_COLUMNS, "held", *BUDGET_COLUMNS, "stripe_customer_id"),
    "api_keys": (*LIMIT_COLUMNS, "allowed_models", "held", *BUDGET_COLUMNS),
}
_TABLES_ADDED_LATER = {
    "ai_credentials",
    "login_links",
    "hub_instances",
    "payment_events",
    *outbox_sql.TABLES,
}
_INDEXES_ADDED_LATER = {"ix_model_calls_time", "ux_accounts_stripe_customer"}


def _as_in_v1(table: Table) -> Table:
    """The table without the columns later migrations add: every database takes the same
    steps, whether it starts empty or at version 1."""
    later = _ADDED_LATER.get(table.name, ())
    if not later:
        return table
    columns = [column._copy() for column in table.columns if column.name not in later]
    return Table(table.name, MetaData(), *columns)


def _v2_usage_estimated(dialect: Dialect) -> list[str]:
    false = "0" if dialect.name == "sqlite" else "false"
    return [f"ALTER TABLE model_calls ADD COLUMN usage_estimated BOOLEAN NOT NULL DEFAULT {false}"]


def _v3_attempts(dialect: Dialect) -> list[str]:
    return [
        "ALTER TABLE model_calls ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE model_calls ADD COLUMN credential VARCHAR(40)",
    ]


def _v4_credentials(dialect: Dialect) -> list[str]:
    table = schema.ai_credentials
    return [str(CreateTable(table).compile(dialect=dialect))]


def _v5_login_links(dialect: Dialect) -> list[str]:
    return [str(CreateTable(schema.login_links).compile(dialect=dialect))]


def _v6_calls_by_time(dialect: Dialect) -> list[str]:
    (index,) = (i for i in schema.model_calls.indexes if i.name == "ix_model_calls_time")
    return [str(CreateIndex(index).compile(dialect=dialect))]


def _v7_cache_writes(dialect: Dialect) -> list[str]:
    return [
        "ALTER TABLE ai_model_rates ADD COLUMN cache_write_rate BIGINT",
        "ALTER TABLE model_calls ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0",
    ]


def _v8_session_epoch(dialect: Dialect) -> list[str]:
    return ["ALTER TABLE accounts ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0"]


# Migration 9: the meter triggers refuse a charge that would take a balance below
# -MAX_BALANCE (hub.bounds), in the statement that would write it, so that no settle can
# carry a balance past what int64 holds (SQLite would make it a float without a word). The
# store records such a call failed (settle_refused) at no charge. The floor is written
# into the triggers: moving the bound takes a migration.
_GUARDED_METER = {
    "sqlite": """
CREATE TRIGGER model_calls_meter_{name} AFTER {event} ON model_calls
WHEN {when}
BEGIN
    SELECT RAISE(ABORT, 'balance_out_of_bounds')
    WHERE (SELECT balance FROM accounts WHERE id = NEW.account_id) - NEW.credits < {floor};
    INSERT INTO meter_events (account_id, call_id, amount, created_at)
    VALUES (NEW.account_id, NEW.id, NEW.credits, COALESCE(NEW.response_at, NEW.request_at));
    UPDATE accounts SET balance = balance - NEW.credits WHERE id = NEW.account_id;
END""",
    "postgresql": """
CREATE OR REPLACE FUNCTION aigne_hub_meter_call() RETURNS trigger AS $$
DECLARE
    after BIGINT;
BEGIN
    INSERT INTO meter_events (account_id, call_id, amount, created_at)
    VALUES (NEW.account_id, NEW.id, NEW.credits, COALESCE(NEW.response_at, NEW.request_at));
    UPDATE accounts SET balance = balance - NEW.credits WHERE id = NEW.account_id
    RETURNING balance INTO after;
    IF after < {floor} THEN
        RAISE EXCEPTION 'balance_out_of_bounds' USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
}


def _v9_balance_floor(dialect: Dialect) -> list[str]:
    template = _GUARDED_METER[dialect.name]
    if dialect.name == "postgresql":  # the triggers call this function
        return [template.format(floor=-MAX_BALANCE)]
    final = "NEW.status <> 'processing' AND NEW.credits <> 0"
    cases = [
        ("update", "UPDATE", f"OLD.status = 'processing' AND {final}"),
        ("insert", "INSERT", final),
    ]
    statements = []
    for name, event, when in cases:
        statements.append(f"DROP TRIGGER model_calls_meter_{name}")
        statements.append(template.format(name=name, event=event, when=when, floor=-MAX_BALANCE))
    return statements


def _v10_instances(dialect: Dialect) -> list[str]:
    # Calls opened before this step have no instance: the recovery leaves them to the
    # six-hour rule that came before it (see hub.store.instances).
    return [
        str(CreateTable(schema.hub_instances).compile(dialect=dialect)),
        "ALTER TABLE model_calls ADD COLUMN instance_id VARCHAR(40)",
        "ALTER TABLE model_calls ADD COLUMN prompt_estimate INTEGER",
    ]


def _v11_limit_overrides(dialect: Dialect) -> list[str]:
    return [
        f"ALTER TABLE {table} ADD COLUMN {column} BIGINT"
        for table in ("accounts", "api_keys")
        for column in LIMIT_COLUMNS
    ]


# Migration 12: credit holds kept in the database, shared by every process and instance. A
# call is admitted by the statement that adds its hold to accounts.held (only while the
# balance less what is held is above zero), in the transaction that writes its `processing`
# row, which carries the hold. The row leaving `processing` releases the hold, in the
# statement that settles it: whoever settles it (the call's own hub, or crash recovery
# settling a dead instance's calls), the hold goes exactly once, with the charge.
_RELEASE_HOLD_WHEN = "OLD.status = 'processing' AND NEW.status <> 'processing' AND OLD.held <> 0"
_RELEASE_HOLD = {
    "sqlite": [
        f"""
CREATE TRIGGER model_calls_release_hold AFTER UPDATE ON model_calls
WHEN {_RELEASE_HOLD_WHEN}
BEGIN
    UPDATE accounts SET held = held - OLD.held WHERE id = OLD.account_id;
END"""
    ],
    "postgresql": [
        """
CREATE OR REPLACE FUNCTION aigne_hub_release_hold() RETURNS trigger AS $$
BEGIN
    UPDATE accounts SET held = held - OLD.held WHERE id = OLD.account_id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
        f"""
CREATE TRIGGER model_calls_release_hold AFTER UPDATE ON model_calls
FOR EACH ROW WHEN ({_RELEASE_HOLD_WHEN}) EXECUTE FUNCTION aigne_hub_release_hold()""",
    ],
}


def _v12_shared_holds(dialect: Dialect) -> list[str]:
    return [
        "ALTER TABLE accounts ADD COLUMN held BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE model_calls ADD COLUMN held BIGINT NOT NULL DEFAULT 0",
        *_RELEASE_HOLD[dialect.name],
    ]


def _v13_key_models(dialect: Dialect) -> list[str]:
    return ["ALTER TABLE api_keys ADD COLUMN allowed_models TEXT"]


def _v16_payments(dialect: Dialect) -> list[str]:
    (index,) = (i for i in schema.accounts.indexes if i.name == "ux_accounts_stripe_customer")
    return [
        "ALTER TABLE accounts ADD COLUMN stripe_customer_id VARCHAR(255)",
        str(CreateIndex(index).compile(dialect=dialect)),
        str(CreateTable(schema.payment_events).compile(dialect=dialect)),
    ]


def _v18_client_format(dialect: Dialect) -> list[str]:
    return ["ALTER TABLE model_calls ADD COLUMN client_format VARCHAR(16)"]


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "initial schema", _v1_initial),
    (2, "model_calls.usage_estimated", _v2_usage_estimated),
    (3, "model_calls.attempts and credential", _v3_attempts),
    (4, "ai_credentials", _v4_credentials),
    (5, "login_links", _v5_login_links),
    (6, "model_calls by time", _v6_calls_by_time),
    (7, "cache-write rates and tokens", _v7_cache_writes),
    (8, "accounts.session_epoch", _v8_session_epoch),
    (9, "meter triggers refuse a balance past its floor", _v9_balance_floor),
    (10, "hub_instances, model_calls.instance_id and prompt_estimate", _v10_instances),
    (11, "rate limits per key and account", _v11_limit_overrides),
    (12, "credit holds shared in the database", _v12_shared_holds),
    (13, "api_keys.allowed_models", _v13_key_models),
    (14, "spend caps per key and account", v14_budgets),
    (15, "grants move the balance by trigger, as meter events do", v15_grants_by_trigger),
    (16, "payment_events and accounts.stripe_customer_id", _v16_payments),
    (17, "outbox of ledger rows, its deliveries and lease", outbox_sql.migration),
    (18, "model_calls.client_format", _v18_client_format),
]
LATEST = MIGRATIONS[-1][0]

# Serializes concurrent starts of several instances against one PostgreSQL.
_PG_LOCK_ID = 0x41494748


async def use_wal(database: Database, timeout: float = 10.0) -> None:
    """Put a SQLite file in WAL mode (readers never wait for the writer), waiting for
    another process that starts at the same moment: on a new file the switch needs an
    exclusive lock that SQLite does not wait for, and says "database is locked" at once."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            await database.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


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


@asynccontextmanager
async def _alone(database: Database, dialect: Dialect) -> AsyncIterator[None]:
    """One transaction that no other process migrating the same database runs beside.

    Several workers (or instances) start together: each must find the version, and apply
    what is missing, while the others wait. PostgreSQL: a transaction-scoped advisory lock.
    SQLite: BEGIN IMMEDIATE takes the write lock before the version is read (a plain BEGIN
    reads first, and the second writer then fails at once with "database is locked", which
    no busy timeout can wait out); the others wait for it in SQLite's busy handler.
    """
    async with database.connection() as connection:
        if dialect.name != "sqlite":
            async with connection.transaction():
                await connection.execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK_ID})")
                yield
            return
        await connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await connection.execute("ROLLBACK")
            raise
        await connection.execute("COMMIT")


async def upgrade(database: Database, dialect: Dialect) -> list[int]:
    """Apply every migration newer than the database; returns the versions applied. Safe
    when several processes start on one database at once: one migrates, the others wait
    and find it done."""
    applied: list[int] = []
    async with _alone(database, dialect):
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
