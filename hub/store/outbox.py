"""The outbox: ledger rows copied for external sinks, their deliveries, and the lease.

Migration 17 adds triggers AFTER INSERT on `meter_events` and `credit_grants` that copy each
ledger row into `outbox` in the statement that writes it: whatever writes the ledger (the
settle's meter triggers, a grant, crash recovery), its outbox row commits or rolls back
with it. Nothing reads the ledger by id: PostgreSQL ids can commit out of order, so a cursor
over them would skip rows. The dispatcher instead finds outbox rows not yet `enrolled` (a
partial index), gives each a delivery row per sink, and marks it enrolled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, literal_column, null, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import ColumnClause

from hub.store import schema
from hub.store.raw import Exec, Fetch, Operation, Prepared, single
from hub.store.schema import accounts, model_calls, outbox, outbox_deliveries, outbox_lease
from hub.store.statements import param

if TYPE_CHECKING:
    from hub.store.sql import SqlStore

TABLES = ("outbox", "outbox_deliveries", "outbox_lease")
LEASE = "dispatcher"
# Literal in the statements so that the partial indexes can be used.
DELIVERED: ColumnClause[str] = literal_column("'delivered'")
UNENROLLED: ColumnClause[int] = literal_column("0")

_COPY = {
    "meter_events": ("meter_event", "NEW.call_id"),
    "credit_grants": ("grant", "NULL"),
}
_SQLITE_TRIGGER = """
CREATE TRIGGER {table}_outbox AFTER INSERT ON {table}
BEGIN
    INSERT INTO outbox (kind, ledger_id, account_id, amount, call_id, created_at, enrolled)
    VALUES ('{kind}', NEW.id, NEW.account_id, NEW.amount, {call}, NEW.created_at, 0);
END"""
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION aigne_hub_{table}_outbox() RETURNS trigger AS $$
BEGIN
    INSERT INTO outbox (kind, ledger_id, account_id, amount, call_id, created_at, enrolled)
    VALUES ('{kind}', NEW.id, NEW.account_id, NEW.amount, {call}, NEW.created_at, 0);
    RETURN NULL;
END
$$ LANGUAGE plpgsql"""
_PG_TRIGGER = """
CREATE TRIGGER {table}_outbox AFTER INSERT ON {table}
FOR EACH ROW EXECUTE FUNCTION aigne_hub_{table}_outbox()"""


def migration(dialect: Dialect) -> list[str]:
    """Migration 17: the tables, and the triggers that fill the outbox with the ledger."""
    statements: list[str] = []
    for made in (schema.outbox, schema.outbox_deliveries, schema.outbox_lease):
        statements.append(str(CreateTable(made).compile(dialect=dialect)))
        for index in sorted(made.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index).compile(dialect=dialect)))
    statements.append(
        f"INSERT INTO outbox_lease (name, holder, expires_at) VALUES ('{LEASE}', '', 0)"
    )
    for table, (kind, call) in _COPY.items():
        values = {"table": table, "kind": kind, "call": call}
        if dialect.name == "sqlite":
            statements.append(_SQLITE_TRIGGER.format(**values))
        else:
            statements += [_PG_FUNCTION.format(**values), _PG_TRIGGER.format(**values)]
    return statements


@dataclass(frozen=True, slots=True)
class Due:
    """What one delivery sends: one outbox row (per call), or a summed report of several."""

    key: str  # the outbox id (per call) or the report id (summed)
    kind: str
    account_id: int
    account_did: str
    amount: int
    created_at: float
    attempts: int
    ledger_id: int = 0
    call_id: str | None = None
    model: str | None = None
    count: int = 1


class _Statements:
    def __init__(self, dialect: Dialect) -> None:
        def prep(statement: Any) -> Prepared:
            return Prepared(statement, dialect)

        o, d, lease = outbox, outbox_deliveries, outbox_lease
        insert = sqlite_insert if dialect.name == "sqlite" else pg_insert
        # Taken when free, expired, or already this holder's: one UPDATE, so of several
        # instances trying at once exactly one gets it.
        self.take = prep(
            lease.update()
            .where(
                lease.c.name == LEASE,
                (lease.c.holder == param("me")) | (lease.c.expires_at < param("now")),
            )
            .values(holder=param("me"), expires_at=param("until"))
        )
        # The row, if it is missing (the migration makes it; a database emptied by hand
        # would otherwise have a lease nobody can take).
        self.lease_row = prep(
            insert(lease).values(name=LEASE, holder="", expires_at=0.0).on_conflict_do_nothing()
        )
        self.release = prep(
            lease.update()
            .where(lease.c.name == LEASE, lease.c.holder == param("me"))
            .values(expires_at=0.0)
        )
        self.holder = prep(select(lease.c.holder, lease.c.expires_at).where(lease.c.name == LEASE))
        self.unenrolled = prep(
            select(o.c.id, o.c.kind)
            .where(o.c.enrolled == UNENROLLED)
            .order_by(o.c.id)
            .limit(param("limit"))
        )
        self.enroll = prep(
            insert(d)
            .values(
                outbox_id=param("id"), sink=param("sink"), state="pending", attempts=0, next_at=0.0
            )
            .on_conflict_do_nothing()
        )
        self.mark_enrolled = prep(o.update().where(o.c.id == param("id")).values(enrolled=1))
        joined = d.join(o, o.c.id == d.c.outbox_id).join(accounts, accounts.c.id == o.c.account_id)
        undelivered = and_(d.c.sink == param("sink"), d.c.state != DELIVERED)
        self.due_rows = prep(
            select(
                o.c.id,
                o.c.kind,
                o.c.account_id,
                accounts.c.did,
                o.c.amount,
                o.c.created_at,
                d.c.attempts,
                o.c.ledger_id,
                o.c.call_id,
                model_calls.c.model,
            )
            .select_from(joined.outerjoin(model_calls, model_calls.c.id == o.c.call_id))
            .where(undelivered, d.c.next_at <= param("now"), d.c.report.is_(None))
            .order_by(d.c.next_at, o.c.id)
            .limit(param("limit"))
        )
        self.unreported = prep(
            select(o.c.id, o.c.kind, o.c.account_id, o.c.created_at)
            .select_from(d.join(o, o.c.id == d.c.outbox_id))
            .where(undelivered, d.c.report.is_(None), o.c.created_at < param("before"))
            .order_by(o.c.id)
            .limit(param("limit"))
        )
        self.assign = prep(
            d.update()
            .where(d.c.outbox_id == param("id"), d.c.sink == param("sink"), d.c.report.is_(None))
            .values(report=param("report"))
        )
        self.due_reports = prep(
            select(
                d.c.report,
                o.c.kind,
                o.c.account_id,
                accounts.c.did,
                func.sum(o.c.amount),
                func.min(o.c.created_at),
                func.max(d.c.attempts),
                func.count(),
            )
            .select_from(joined)
            .where(undelivered, d.c.next_at <= param("now"), d.c.report.is_not(None))
            .group_by(d.c.report, o.c.kind, o.c.account_id, accounts.c.did)
            .order_by(func.min(d.c.next_at))
            .limit(param("limit"))
        )
        by_row = and_(d.c.sink == param("sink"), d.c.outbox_id == param("id"))
        by_report = and_(d.c.sink == param("sink"), d.c.report == param("report"))
        delivered = {"state": "delivered", "delivered_at": param("now"), "last_error": null()}
        failed = {
            "state": "failing",
            "attempts": d.c.attempts + 1,
            "next_at": param("next_at"),
            "last_error": param("error"),
        }
        open_ = d.c.state != DELIVERED
        self.delivered_row = prep(d.update().where(by_row, open_).values(**delivered))
        self.delivered_report = prep(d.update().where(by_report, open_).values(**delivered))
        self.failed_row = prep(d.update().where(by_row, open_).values(**failed))
        self.failed_report = prep(d.update().where(by_report, open_).values(**failed))
        waiting = d.c.state != DELIVERED
        self.retry_one = prep(
            d.update().where(waiting, d.c.outbox_id == param("id")).values(next_at=0.0)
        )
        self.retry_all = prep(d.update().where(waiting).values(next_at=0.0))
        self.lag = prep(
            select(d.c.sink, func.count(), func.min(o.c.created_at))
            .select_from(d.join(o, o.c.id == d.c.outbox_id))
            .where(waiting)
            .group_by(d.c.sink)
        )
        self.lag_unenrolled = prep(
            select(func.count(), func.min(o.c.created_at)).where(o.c.enrolled == UNENROLLED)
        )
        # Read by name, not by the schema: the column comes with another migration (16),
        # and an older database answers with an error the Stripe sink reports.
        self.customer = prep(text("SELECT stripe_customer_id FROM accounts WHERE id = :p_id"))
        self.listing = prep(
            select(
                o.c.id,
                o.c.kind,
                o.c.ledger_id,
                accounts.c.did,
                o.c.amount,
                o.c.created_at,
                d.c.sink,
                d.c.state,
                d.c.attempts,
                d.c.next_at,
                d.c.last_error,
                d.c.report,
                o.c.enrolled,
            )
            .select_from(
                o.join(accounts, accounts.c.id == o.c.account_id).outerjoin(
                    d, d.c.outbox_id == o.c.id
                )
            )
            .where(
                (d.c.state.is_(None) & (o.c.enrolled == UNENROLLED))
                | (d.c.state != DELIVERED)
                | (param("all") == 1)
            )
            .order_by(o.c.id.desc(), d.c.sink)
            .limit(param("limit"))
        )


class OutboxStore:
    """The outbox's reads and writes, each one group-committed operation of the store."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._sql = _Statements(store.dialect)

    async def take_lease(self, me: str, now: float, seconds: float) -> bool:
        """Take or renew the dispatcher's lease; whether this holder has it now."""
        values = {"p_me": me, "p_now": now, "p_until": now + seconds}

        def op() -> Operation[bool]:
            if (yield Exec(self._sql.take, values)):
                return True
            yield Exec(self._sql.lease_row, {})
            return bool((yield Exec(self._sql.take, values)))

        return await self.store.run(op)

    async def release_lease(self, me: str) -> None:
        await self.store.run(lambda: single(Exec(self._sql.release, {"p_me": me})))

    async def lease_holder(self) -> tuple[str, float]:
        row = await self.store.run(lambda: single(Fetch(self._sql.holder, {})))
        return str(row[0]), float(row[1])

    async def enroll(self, sinks: dict[str, tuple[str, ...]], limit: int) -> int:
        """Give outbox rows not yet enrolled a delivery per sink that takes their kind;
        the number of rows enrolled."""

        def op() -> Operation[int]:
            rows = yield Fetch(self._sql.unenrolled, {"p_limit": limit}, all=True)
            for outbox_id, kind in rows:
                for sink, kinds in sinks.items():
                    if kind in kinds:
                        yield Exec(self._sql.enroll, {"p_id": outbox_id, "p_sink": sink})
                yield Exec(self._sql.mark_enrolled, {"p_id": outbox_id})
            return len(rows)

        return await self.store.run(op)

    async def due(self, sink: str, now: float, limit: int) -> list[Due]:
        """Rows of a per-call sink whose next try has come."""
        values = {"p_sink": sink, "p_now": now, "p_limit": limit}
        rows = await self.store.run(lambda: single(Fetch(self._sql.due_rows, values, all=True)))
        return [
            Due(
                key=str(r[0]),
                kind=r[1],
                account_id=int(r[2]),
                account_did=r[3],
                amount=int(r[4]),
                created_at=float(r[5]),
                attempts=int(r[6]),
                ledger_id=int(r[7]),
                call_id=r[8],
                model=r[9],
            )
            for r in rows
        ]

    async def unreported(self, sink: str, before: float, limit: int) -> list[tuple[Any, ...]]:
        """(outbox id, kind, account id, created_at) of rows of a summed sink in no report
        yet, made before `before` (their period has closed)."""
        values = {"p_sink": sink, "p_before": before, "p_limit": limit}
        rows = await self.store.run(lambda: single(Fetch(self._sql.unreported, values, all=True)))
        return [tuple(r) for r in rows]

    async def assign(self, sink: str, reports: dict[str, list[int]]) -> None:
        """Fix which rows each report covers, all or nothing: a row already in a report
        (another dispatcher's, at a takeover) fails the whole transaction."""

        def op() -> Operation[None]:
            for report, ids in reports.items():
                for outbox_id in ids:
                    values = {"p_id": outbox_id, "p_sink": sink, "p_report": report}
                    if not (yield Exec(self._sql.assign, values)):
                        raise RuntimeError(f"outbox row {outbox_id} is already in a report")

        await self.store.run(op)

    async def due_reports(self, sink: str, now: float, limit: int) -> list[Due]:
        """Summed reports of a sink whose next try has come, each with its total."""
        values = {"p_sink": sink, "p_now": now, "p_limit": limit}
        rows = await self.store.run(lambda: single(Fetch(self._sql.due_reports, values, all=True)))
        return [
            Due(
                key=r[0],
                kind=r[1],
                account_id=int(r[2]),
                account_did=r[3],
                amount=int(r[4]),
                created_at=float(r[5]),
                attempts=int(r[6]),
                count=int(r[7]),
            )
            for r in rows
        ]

    async def record(
        self,
        sink: str,
        *,
        summed: bool,
        delivered: list[str],
        failed: list[tuple[str, float, str]],
        now: float,
    ) -> None:
        """Results of a round: keys delivered, and (key, next try, error) of those that failed."""
        sql = self._sql
        done, fail = (
            (sql.delivered_report, sql.failed_report)
            if summed
            else (sql.delivered_row, sql.failed_row)
        )

        def key(value: str) -> dict[str, Any]:
            return {"p_report": value} if summed else {"p_id": int(value)}

        def op() -> Operation[None]:
            for k in delivered:
                yield Exec(done, {"p_sink": sink, "p_now": now, **key(k)})
            for k, next_at, error in failed:
                values = {"p_sink": sink, "p_next_at": next_at, "p_error": error[:500]}
                yield Exec(fail, {**values, **key(k)})

        await self.store.run(op)

    async def lag(self) -> tuple[dict[str, tuple[int, float | None]], tuple[int, float | None]]:
        """Undelivered rows per sink (count, oldest created_at), and the same of rows not
        yet enrolled (waiting for every sink)."""

        def op() -> Operation[Any]:
            per_sink = yield Fetch(self._sql.lag, {}, all=True)
            waiting = yield Fetch(self._sql.lag_unenrolled, {})
            return per_sink, waiting

        per_sink, waiting = await self.store.run(op)
        return {s: (int(n), oldest) for s, n, oldest in per_sink}, (int(waiting[0]), waiting[1])

    async def customer(self, account_id: int) -> str | None:
        """The account's Stripe customer id (accounts.stripe_customer_id), or None."""
        row = await self.store.run(lambda: single(Fetch(self._sql.customer, {"p_id": account_id})))
        return None if row is None or row[0] is None else str(row[0])

    async def listing(self, *, everything: bool, limit: int) -> list[dict[str, Any]]:
        """Outbox rows and their per-sink state, newest first; undelivered only unless
        `everything`."""
        values = {"p_all": 1 if everything else 0, "p_limit": limit}
        rows = await self.store.run(lambda: single(Fetch(self._sql.listing, values, all=True)))
        names: tuple[str, ...] = ("id", "kind", "ledger_id", "account", "amount", "created_at")
        names += ("sink", "state", "attempts", "next_at", "last_error", "report", "enrolled")
        listed = [dict(zip(names, row, strict=True)) for row in rows]
        for entry in listed:
            enrolled = entry.pop("enrolled")
            if entry["state"] is None:
                # Not enrolled yet, or no sink takes its kind (grants, for Stripe alone).
                entry["state"] = "no sink" if enrolled else "unenrolled"
        return listed

    async def retry(self, outbox_id: int | None) -> int:
        """Make undelivered rows (one, or all) due now; the number of deliveries."""
        if outbox_id is None:
            return int(await self.store.run(lambda: single(Exec(self._sql.retry_all, {}))))
        values = {"p_id": outbox_id}
        return int(await self.store.run(lambda: single(Exec(self._sql.retry_one, values))))
