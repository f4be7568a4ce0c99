"""The store: implements middleware.ports on `databases` + SQLAlchemy Core."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from databases import Database, DatabaseURL
from sqlalchemy import Boolean, Select, or_, select

from hub.bounds import MAX_CHARGE
from hub.store import budgets, migrate
from hub.store.committer import GroupCommitter
from hub.store.raw import (
    Backend,
    Bulk,
    Exec,
    Fetch,
    Operation,
    PostgresBackend,
    Prepared,
    SqliteBackend,
    Work,
    dialect_for,
    rows_changed,
    single,
)
from hub.store.schema import accounts, api_keys
from hub.store.settle import call_values, fit_texts, settle_call
from hub.store.statements import Statements
from middleware.call import Call, CallType
from middleware.ports import (
    AccountRecord,
    KeyRecord,
    Quota,
    Rate,
)
from middleware.scopes import ModelScope

T = TypeVar("T")

# A key's last-used time is written at most this often, so auth stays off the write path.
TOUCH_INTERVAL = 60.0
# Seconds: how stale the rate cache may be before a call for an unpriced model re-reads it.
RATE_MISS_RELOAD = 1.0


class SqlStore:
    """One writer connection with group commit, and small read caches in front of it."""

    def __init__(
        self,
        url: str,
        *,
        balance_cache_seconds: float = 1.0,
        rate_cache_seconds: float = 5.0,
        sqlite_synchronous: str = "FULL",
        welcome_credits: int = 0,
    ) -> None:
        self.url = url
        # Granted to each account in the transaction that creates it (`billing.welcome_credits`).
        self.welcome_credits = welcome_credits
        self.scheme = url.split(":", 1)[0]
        self.dialect = dialect_for(self.scheme)
        self.sql = Statements(self.dialect)
        self.budget_sql = budgets.BudgetStatements(self.dialect)
        self.balance_cache_seconds = balance_cache_seconds
        self.rate_cache_seconds = rate_cache_seconds
        self.sqlite_synchronous = sqlite_synchronous
        options: dict[str, Any] = {"timeout": 10} if self.is_sqlite else {"min_size": 1}
        self.database = Database(url, **options)
        self._backend: Backend | None = None
        self._writer: GroupCommitter | None = None
        self._balances: dict[int, tuple[float, int]] = {}
        self._rates: dict[tuple[str, str], Rate] = {}
        self._priced: frozenset[str] = frozenset()
        self._rates_expire = 0.0
        self._rates_loaded_at = 0.0
        self._rates_loading: asyncio.Future[None] | None = None
        self._touched: dict[str, float] = {}
        # The hub instance this store records calls for (hub.store.instances registers it);
        # None in the CLI, which opens no calls.
        self.instance_id: str | None = None
        self._overrides: tuple[dict[str, Quota], dict[int, Quota]] = ({}, {})
        self._overrides_expire = 0.0
        self._overrides_loading: asyncio.Future[None] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect.name == "sqlite"

    # -- lifecycle -------------------------------------------------------------------

    async def open(self, *, upgrade: bool = True) -> None:
        """Connect, bring the schema up to date, and start the writer."""
        await self.database.connect()
        if self.is_sqlite:
            # WAL lets readers (the CLI, the dashboard) work while the hub writes.
            await migrate.use_wal(self.database)
        if upgrade:
            await migrate.upgrade(self.database, self.dialect)
        elif await migrate.current_version(self.database, self.dialect) < migrate.LATEST:
            raise RuntimeError("the database schema is out of date: run 'aigne-hub db upgrade'")
        if self.is_sqlite:
            backend = SqliteBackend(DatabaseURL(self.url).database, self.sqlite_synchronous)
            await backend.start()
            self._backend = backend
        else:
            pg = PostgresBackend(self.url)
            await pg.start()
            self._backend = pg
        self._writer = GroupCommitter(self._backend)
        self._writer.start()

    async def close(self) -> None:
        """Commit what is queued, release the connection, disconnect."""
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._backend is not None:
            await self._backend.close()
            self._backend = None
        await self.database.disconnect()

    async def run(self, work: Callable[[], Operation[T]] | Bulk) -> T:
        """Run an operation inside the next group-committed transaction."""
        if self._writer is None:
            raise RuntimeError("the store is not open")
        return await self._writer.run(work)

    def _submit(self, work: Work) -> None:
        if self._writer is None:
            raise RuntimeError("the store is not open")
        self._writer.submit(work)

    async def fetchone(self, stmt: Prepared, values: dict[str, Any]) -> Any:
        return await self.run(lambda: single(Fetch(stmt, values)))

    async def query(self, statement: Select[Any]) -> list[dict[str, Any]]:
        """Run an ad-hoc Core select (listings, filters) on the store's connection."""
        prepared = Prepared(statement, self.dialect)
        params = prepared.params
        keys = [str(column.key) for column in statement.selected_columns]
        rows = await self.run(lambda: single(Fetch(prepared, params, all=True)))
        return _with_booleans(statement, [dict(zip(keys, row, strict=True)) for row in rows])

    async def read(self, statement: Select[Any]) -> list[dict[str, Any]]:
        """A big read (analytics, exports) on a connection of its own, so it never holds up
        the writer that every call's record and charge go through."""
        rows = await self.database.fetch_all(statement)
        return _with_booleans(statement, [dict(row._mapping) for row in rows])

    async def execute(self, statement: Any) -> int:
        """Run an ad-hoc Core insert/update/delete; the rows it changed."""
        prepared = Prepared(statement, self.dialect)
        params = prepared.params
        return await self.run(lambda: rows_changed(Exec(prepared, params)))

    # -- ports used by the middlewares ----------------------------------------------

    async def find_key(self, key_hash: str) -> KeyRecord | None:
        row = await self.fetchone(self.sql.find_key, {"p_hash": key_hash})
        if row is None:
            return None
        key_id, account_id, did, app_did, is_admin, revoked_at, expires_at, models, budget = row
        return KeyRecord(
            key_id=key_id,
            account_id=int(account_id),
            user_did=did,
            app_did=app_did,
            is_admin=bool(is_admin),
            revoked=revoked_at is not None,
            expires_at=expires_at,
            models=ModelScope.of(read_patterns(models)),
            budgeted=budget is not None,
        )

    def touch_key(self, key_id: str) -> None:
        now = time.time()
        if now - self._touched.get(key_id, 0.0) < TOUCH_INTERVAL:
            return
        self._touched[key_id] = now
        self._submit(Bulk(self.sql.touch_key, {"p_id": key_id, "p_now": now}, phase=1))

    async def find_account(self, user_did: str) -> AccountRecord | None:
        row = await self.fetchone(self.sql.find_account, {"p_did": user_did})
        return None if row is None else AccountRecord(int(row[0]), bool(row[1]), int(row[2]))

    async def balance(self, account_id: int, *, fresh: bool = False) -> int:
        cached = self._balances.get(account_id)
        if not fresh and cached is not None and cached[0] > time.monotonic():
            return cached[1]
        row = await self.fetchone(self.sql.balance, {"p_id": account_id})
        value = int(row[0]) if row is not None else 0
        self._remember_balance(account_id, value)
        return value

    def forget_balance(self, account_id: int) -> None:
        """Drop the account's cached balance (moved by a write the cache did not see)."""
        self._balances.pop(account_id, None)

    def _remember_balance(self, account_id: int, value: int) -> None:
        self._balances[account_id] = (time.monotonic() + self.balance_cache_seconds, value)

    async def rate(self, model: str, call_type: CallType) -> Rate | None:
        if time.monotonic() >= self._rates_expire:
            await self._reload_rates()
        found = self._rates.get((model, call_type))
        if found is None and time.monotonic() - self._rates_loaded_at >= RATE_MISS_RELOAD:
            # A refusal re-reads first, so a rate set a moment ago (by the CLI or another
            # instance) counts at once; unpriced calls cause at most one read a second.
            await self._reload_rates()
            found = self._rates.get((model, call_type))
        return found

    def priced(self, model: str) -> bool:
        """Whether the cached rates price this model (for any call type): no database read,
        so as fresh as the last `rate` lookup (every call's, when billing is on)."""
        return model in self._priced

    async def _reload_rates(self) -> None:
        # One reload at a time, in a task of its own: a caller that is cancelled (its
        # client hung up) stops waiting, but the reload, shared with others, goes on.
        if self._rates_loading is None or self._rates_loading.done():
            self._rates_loading = asyncio.ensure_future(self._load_rates())
        await asyncio.shield(self._rates_loading)

    async def _load_rates(self) -> None:
        rows = await self.run(lambda: single(Fetch(self.sql.all_rates, {}, all=True)))
        self._rates = {
            (r[0], r[1]): Rate(
                model=r[0],
                call_type=r[1],
                input_rate=int(r[2]),
                output_rate=int(r[3]),
                cached_rate=None if r[4] is None else int(r[4]),
                image_rate=None if r[5] is None else int(r[5]),
                cache_write_rate=None if r[6] is None else int(r[6]),
            )
            for r in rows
        }
        self._priced = frozenset(model for model, _ in self._rates)
        self._rates_loaded_at = time.monotonic()
        self._rates_expire = self._rates_loaded_at + self.rate_cache_seconds

    async def limit_overrides(self) -> tuple[dict[str, Quota], dict[int, Quota]]:
        if time.monotonic() >= self._overrides_expire:
            # One reload at a time, shared, as for rates.
            if self._overrides_loading is None or self._overrides_loading.done():
                self._overrides_loading = asyncio.ensure_future(self._load_overrides())
            await asyncio.shield(self._overrides_loading)
        return self._overrides

    async def _load_overrides(self) -> None:
        found: list[dict[Any, Quota]] = []
        for table in (api_keys, accounts):
            c = table.c
            rows = await self.query(
                select(c.id, c.limit_rpm, c.limit_tpm, c.limit_concurrent).where(
                    or_(
                        c.limit_rpm.is_not(None),
                        c.limit_tpm.is_not(None),
                        c.limit_concurrent.is_not(None),
                    )
                )
            )
            found.append(
                {
                    r["id"]: Quota(r["limit_rpm"], r["limit_tpm"], r["limit_concurrent"])
                    for r in rows
                }
            )
        self._overrides = (found[0], found[1])
        self._overrides_expire = time.monotonic() + self.rate_cache_seconds

    def forget_caches(self) -> None:
        """Drop cached balances and rates (after changes made by another process)."""
        self._overrides_expire = 0.0
        self._balances.clear()
        self._rates_expire = 0.0

    async def open_call(self, call: Call) -> None:
        values = fit_texts(call_values(call, self.instance_id))
        if call.hold is None:  # no credit check (billing is off)
            await self.run(Bulk(self.sql.insert_call, values, phase=0))
            return
        # At most what one call may be charged: the sum of the holds stays far inside int64.
        values["p_held"] = min(call.hold, MAX_CHARGE)
        # The periods of the spend caps are those of the call's start (its request_at).
        values.update(budgets.period_values(call.started_at))
        key_capped = call.identity.budgeted and call.identity.key_id is not None
        values["p_key_held"] = values["p_held"] if key_capped else 0
        refused = await self.run(lambda: self._admit(values, key_capped))
        if refused is not None:
            raise refused

    def _admit(self, values: dict[str, Any], key_capped: bool) -> Operation[Exception | None]:
        """Hold the call's credit (on its account, then on its key's cap) and record it
        `processing`, in one transaction (the batch's); or, if the account's balance or
        cap or the key's cap refuses, nothing: the refusal instead."""
        caps = self.budget_sql
        if not key_capped and self.sql.admit_call is not None:
            if (yield Exec(self.sql.admit_call, values)):
                return None
        elif (yield Exec(self.sql.hold_credit, values)):
            # The account's row before the key's, as the settle's triggers take them: a
            # key's row is then only ever waited for by one who holds its account's.
            if key_capped and not (yield Exec(caps.hold_key, values)):
                row = yield Fetch(caps.key_state, values)
                if row is not None and row[0] is not None:
                    yield Exec(caps.unhold_credit, values)  # not seen by anyone: undone
                    return budgets.budget_refusal("key", row, values["p_request_at"])
                values["p_key_held"] = 0  # the cap was cleared just now: none to hold on
            yield Exec(self.sql.insert_call, values)
            return None
        row = yield Fetch(caps.account_state, values)
        return budgets.account_refusal(row, values["p_request_at"])

    async def settle(self, call: Call) -> None:
        await settle_call(self, call)

    def charged(self, account_id: int, charge: int) -> None:
        """The database moved the balance (trigger): keep the cached figure in step."""
        cached = self._balances.get(account_id)
        if cached is not None and charge:
            self._balances[account_id] = (cached[0], cached[1] - charge)


def patterns_json(patterns: list[str] | None) -> str | None:
    """A key's allowed-model patterns as `api_keys.allowed_models` holds them."""
    return None if patterns is None else json.dumps(patterns)


def read_patterns(stored: str | None) -> list[str] | None:
    """The patterns `api_keys.allowed_models` holds (written by patterns_json only)."""
    return None if stored is None else [str(p) for p in json.loads(stored)]


def _with_booleans(statement: Select[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Boolean columns as booleans: SQLite hands them back as 0/1."""
    flags = [str(c.key) for c in statement.selected_columns if isinstance(c.type, Boolean)]
    for row in rows:
        for key in flags:
            if row.get(key) is not None:
                row[key] = bool(row[key])
    return rows
