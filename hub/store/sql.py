"""The store: implements middleware.ports on `databases` + SQLAlchemy Core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from databases import Database
from sqlalchemy import Boolean, Select

from hub.store import migrate
from hub.store.committer import GroupCommitter
from hub.store.raw import PostgresRaw, Prepared, RawConnection, SqliteRaw, dialect_for
from hub.store.statements import Statements
from middleware.call import Call, CallType
from middleware.ports import KeyRecord, Rate

T = TypeVar("T")

# A key's last-used time is written at most this often, so auth stays off the write path.
TOUCH_INTERVAL = 60.0


class SqlStore:
    """One held connection, a group-commit writer on it, and small read caches."""

    def __init__(
        self,
        url: str,
        *,
        balance_cache_seconds: float = 1.0,
        rate_cache_seconds: float = 5.0,
        sqlite_synchronous: str = "FULL",
    ) -> None:
        self.url = url
        self.scheme = url.split(":", 1)[0]
        self.dialect = dialect_for(self.scheme)
        self.sql = Statements(self.dialect)
        self.balance_cache_seconds = balance_cache_seconds
        self.rate_cache_seconds = rate_cache_seconds
        self.sqlite_synchronous = sqlite_synchronous
        options: dict[str, Any] = {"timeout": 10} if self.is_sqlite else {"min_size": 1}
        self.database = Database(url, **options)
        self._held: Any = None
        self._writer: GroupCommitter | None = None
        self._balances: dict[int, tuple[float, int]] = {}
        self._rates: dict[tuple[str, str], Rate] = {}
        self._rates_expire = 0.0
        self._rates_loading: asyncio.Future[None] | None = None
        self._touched: dict[str, float] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.dialect.name == "sqlite"

    # -- lifecycle -------------------------------------------------------------------

    async def open(self, *, upgrade: bool = True) -> None:
        """Connect, bring the schema up to date, and start the writer."""
        await self.database.connect()
        if self.is_sqlite:
            # WAL lets readers (the CLI, the dashboard) work while the hub writes.
            await self.database.execute("PRAGMA journal_mode=WAL")
        if upgrade:
            await migrate.upgrade(self.database, self.dialect)
        elif await migrate.current_version(self.database, self.dialect) < migrate.LATEST:
            raise RuntimeError("the database schema is out of date: run 'aigne-hub db upgrade'")
        self._held = self.database.connection()
        await self._held.__aenter__()
        raw_conn = self._held.raw_connection
        raw: RawConnection
        if self.is_sqlite:
            raw = SqliteRaw(raw_conn)
            await raw_conn.execute("PRAGMA busy_timeout=10000")
            await raw_conn.execute(f"PRAGMA synchronous={self.sqlite_synchronous}")
        else:
            raw = PostgresRaw(raw_conn)
        self._writer = GroupCommitter(raw)
        self._writer.start()

    async def close(self) -> None:
        """Commit what is queued, release the connection, disconnect."""
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._held is not None:
            await self._held.__aexit__(None, None, None)
            self._held = None
        await self.database.disconnect()

    async def run(self, op: Callable[[RawConnection], Awaitable[T]]) -> T:
        """Run `op` inside the next group-committed transaction."""
        if self._writer is None:
            raise RuntimeError("the store is not open")
        return await self._writer.run(op)

    def _submit(self, op: Callable[[RawConnection], Awaitable[Any]]) -> None:
        if self._writer is None:
            raise RuntimeError("the store is not open")
        self._writer.submit(op)

    async def query(self, statement: Select[Any]) -> list[dict[str, Any]]:
        """Run an ad-hoc Core select (listings, filters) on the store's connection."""
        prepared = Prepared(statement, self.dialect)
        params = dict(statement.compile(dialect=self.dialect).params)
        columns = list(statement.selected_columns)
        keys = [str(column.key) for column in columns]
        # SQLite hands booleans back as 0/1.
        flags = {str(c.key) for c in columns if isinstance(c.type, Boolean)}
        rows = await self.run(lambda c: c.fetchall(prepared, params))
        found = [dict(zip(keys, row, strict=True)) for row in rows]
        for row in found:
            for key in flags:
                if row[key] is not None:
                    row[key] = bool(row[key])
        return found

    # -- ports used by the middlewares ----------------------------------------------

    async def find_key(self, key_hash: str) -> KeyRecord | None:
        row = await self.run(lambda c: c.fetchone(self.sql.find_key, {"p_hash": key_hash}))
        if row is None:
            return None
        key_id, account_id, did, app_did, is_admin, revoked_at, expires_at = row
        return KeyRecord(
            key_id=key_id,
            account_id=int(account_id),
            user_did=did,
            app_did=app_did,
            is_admin=bool(is_admin),
            revoked=revoked_at is not None,
            expires_at=expires_at,
        )

    def touch_key(self, key_id: str) -> None:
        now = time.time()
        if now - self._touched.get(key_id, 0.0) < TOUCH_INTERVAL:
            return
        self._touched[key_id] = now
        values = {"p_id": key_id, "p_now": now}
        self._submit(lambda c: c.execute(self.sql.touch_key, values))

    async def find_account(self, user_did: str) -> tuple[int, bool] | None:
        row = await self.run(lambda c: c.fetchone(self.sql.find_account, {"p_did": user_did}))
        return None if row is None else (int(row[0]), bool(row[1]))

    async def balance(self, account_id: int) -> int:
        cached = self._balances.get(account_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        row = await self.run(lambda c: c.fetchone(self.sql.balance, {"p_id": account_id}))
        value = int(row[0]) if row is not None else 0
        self._remember_balance(account_id, value)
        return value

    def _remember_balance(self, account_id: int, value: int) -> None:
        self._balances[account_id] = (time.monotonic() + self.balance_cache_seconds, value)

    async def rate(self, model: str, call_type: CallType) -> Rate | None:
        if time.monotonic() >= self._rates_expire:
            await self._load_rates()
        return self._rates.get((model, call_type))

    async def _load_rates(self) -> None:
        # One reload at a time: concurrent callers wait for the same read.
        if self._rates_loading is not None:
            await asyncio.shield(self._rates_loading)
            return
        self._rates_loading = asyncio.get_running_loop().create_future()
        try:
            rows = await self.run(lambda c: c.fetchall(self.sql.all_rates, {}))
            self._rates = {
                (r[0], r[1]): Rate(
                    model=r[0],
                    call_type=r[1],
                    input_rate=int(r[2]),
                    output_rate=int(r[3]),
                    cached_rate=None if r[4] is None else int(r[4]),
                    image_rate=None if r[5] is None else int(r[5]),
                )
                for r in rows
            }
            self._rates_expire = time.monotonic() + self.rate_cache_seconds
            self._rates_loading.set_result(None)
        except BaseException as exc:
            self._rates_loading.set_exception(exc)
            self._rates_loading.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            self._rates_loading = None

    def forget_caches(self) -> None:
        """Drop cached balances and rates (after changes made by another process)."""
        self._balances.clear()
        self._rates_expire = 0.0

    def open_call(self, call: Call) -> None:
        values = _call_values(call)
        self._submit(lambda c: c.execute(self.sql.insert_call, values))

    async def settle(self, call: Call) -> bool:
        values = _call_values(call)
        values["p_now"] = time.time()
        charge = call.charge or 0

        async def op(c: RawConnection) -> tuple[bool, int | None]:
            if await c.execute(self.sql.settle_call, values) == 0:
                if await c.fetchone(self.sql.call_exists, values) is not None:
                    return False, None  # settled before: never apply a charge twice
                # The queued `processing` insert was lost: write the final record now.
                await c.execute(self.sql.insert_call, values)
            if charge == 0:
                return True, None
            await c.execute(self.sql.insert_meter, values)
            row = await c.fetchone(
                self.sql.add_balance, {"p_id": call.identity.account_id, "p_amount": -charge}
            )
            return True, None if row is None else int(row[0])

        applied, balance = await self.run(op)
        if balance is not None:
            self._remember_balance(call.identity.account_id, balance)
        return applied


def _call_values(call: Call) -> dict[str, Any]:
    usage = call.usage
    finished = call.status != "processing"
    values: dict[str, Any] = {
        "id": call.id,
        "request_id": call.request_id,
        "account_id": call.identity.account_id,
        "user_did": call.identity.user_did,
        "app_did": call.app_did,
        "api_key_id": call.identity.key_id,
        "provider": call.provider,
        "model": call.model,
        "upstream_model": call.upstream_model,
        "type": call.call_type,
        "status": call.status,
        "stream": call.stream,
        "request_at": call.started_at,
        "response_at": call.started_at + call.duration_ms / 1000 if finished else None,
        "duration_ms": call.duration_ms if finished else None,
        "ttfb_ms": call.ttfb_ms,
        "input_tokens": usage.input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "image_count": usage.images if usage else 0,
        "credits": call.charge or 0,
        "http_status": call.http_status,
        "error_code": call.error_code,
        "error_message": call.error_message,
    }
    return {f"p_{k}": v for k, v in values.items()}
