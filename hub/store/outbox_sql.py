"""The outbox's SQL: migration 17 (its tables, and the triggers that fill it with the
ledger), and every statement hub.store.outbox runs, compiled once per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, literal_column, null, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import ColumnClause

from hub.store import schema
from hub.store.raw import Prepared
from hub.store.schema import accounts, model_calls, outbox, outbox_deliveries, outbox_lease
from hub.store.statements import param

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


class Statements:
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
