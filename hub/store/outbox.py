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

from hub.store.outbox_sql import Statements
from hub.store.raw import Exec, Fetch, Operation, single

if TYPE_CHECKING:
    from hub.store.sql import SqlStore


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


class OutboxStore:
    """The outbox's reads and writes, each one group-committed operation of the store."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._sql = Statements(store.dialect)

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
