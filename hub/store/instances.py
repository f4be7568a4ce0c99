"""Crash recovery: every hub process registers itself and beats; the calls of one that stops
beating are settled by another.

Each instance (one `serve` worker, one process) has a row in `hub_instances` that it
updates every few seconds, and every call it opens carries its id. When a row has not been
updated for `instance_timeout` seconds, its instance is dead (killed, crashed, cut off from
the database): a live instance claims the row by deleting it, and in that same transaction
settles the dead one's `processing` calls as `failed`/`hub_crashed`, charged for their
prompt as the credit check estimated it at admission (the provider had received it) at the
model's input rate, the usage marked estimated. Nothing is charged for output: what the
provider wrote before the crash is not known.

Two live instances cannot both recover one dead instance (the delete claims it once), and a
recovered call can never be charged twice: each call is settled by an UPDATE that only
matches it while it is `processing`, which is also what guards the normal settle, and the
ledger holds one meter event per call. A late settle from an instance taken for dead (it
stalled past the timeout, then went on) therefore changes nothing; that instance finds its
row gone at its next beat, says so in the log, and registers again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, exists, func, literal_column, or_, select, true
from sqlalchemy.sql.expression import ColumnClause

from hub.bounds import MAX_CHARGE
from hub.store.raw import Exec, Fetch, Operation, Prepared, refused_by_database, single
from hub.store.schema import ai_model_rates, hub_instances, model_calls
from hub.store.sql import SqlStore
from hub.store.statements import param
from middleware.call import new_call_id
from middleware.money import credits_text

logger = logging.getLogger("aigne_hub.instances")

HUB_CRASHED = "hub_crashed"
# A beat at most this often: with the 30 s default timeout an instance may miss five in a
# row (a long pause, a slow database) before it is taken for dead.
MAX_BEAT_SECONDS = 5.0
# Written into the statements, not bound: only then can SQLite and PostgreSQL (whose
# generic plans see a parameter) read the partial index of `processing` calls.
PROCESSING: ColumnClause[str] = literal_column("'processing'")
# Calls opened before migration 10 carry no instance: they are settled once this old, the
# rule that came before instances (no stream lasts this long).
UNOWNED_AFTER = 6 * 3600.0


class _Statements:
    def __init__(self, store: SqlStore) -> None:
        def prep(statement: Any) -> Prepared:
            return Prepared(statement, store.dialect)

        i = hub_instances
        self.register = prep(
            i.insert().values(
                id=param("id"),
                host=param("host"),
                pid=param("pid"),
                started_at=param("started_at"),
                beat_at=param("now"),
            )
        )
        self.beat = prep(i.update().where(i.c.id == param("id")).values(beat_at=param("now")))
        self.deregister = prep(i.delete().where(i.c.id == param("id")))
        self.dead = prep(
            select(i.c.id, i.c.host, i.c.pid, i.c.beat_at).where(
                i.c.beat_at < param("cutoff"), i.c.id != param("me")
            )
        )
        # The claim: of the instances that find the same dead row, one deletes it.
        self.claim = prep(i.delete().where(i.c.id == param("id"), i.c.beat_at < param("cutoff")))
        c = model_calls
        rate = ai_model_rates
        priced = c.outerjoin(rate, and_(rate.c.model == c.c.model, rate.c.type == c.c.type))
        in_flight = select(
            c.c.id, c.c.account_id, c.c.request_at, c.c.prompt_estimate, rate.c.input_rate
        ).select_from(priced)
        # Both read the partial index of `processing` calls (few: those in flight).
        self.calls_of = prep(
            in_flight.where(c.c.status == PROCESSING, c.c.instance_id == param("id"))
        )
        registered = exists().where(i.c.id == c.c.instance_id)
        self.orphans = prep(
            in_flight.where(
                c.c.status == PROCESSING,
                c.c.request_at < param("cutoff"),
                or_(
                    and_(c.c.instance_id != param("me"), ~registered),
                    and_(c.c.instance_id.is_(None), c.c.request_at < param("unowned_cutoff")),
                ),
            )
        )
        in_flight_count = (
            select(func.count())
            .where(c.c.status == PROCESSING, c.c.instance_id == i.c.id)
            .scalar_subquery()
        )
        self.listing = prep(
            select(
                i.c.id, i.c.host, i.c.pid, i.c.started_at, i.c.beat_at, in_flight_count
            ).order_by(i.c.started_at, i.c.id)
        )
        # The settle of a crashed call: the meter triggers (migrate.py) write its ledger
        # row and move the balance in this statement, only if it is still `processing`.
        self.settle_crashed = prep(
            c.update()
            .where(c.c.id == param("id"), c.c.status == PROCESSING)
            .values(
                status="failed",
                error_code=HUB_CRASHED,
                error_message=param("message"),
                response_at=param("end"),
                duration_ms=param("duration_ms"),
                input_tokens=param("tokens"),
                credits=param("credits"),
                usage_estimated=true(),
            )
        )


class Instances:
    """This process's registration, its heartbeat, and the recovery of dead instances."""

    def __init__(
        self,
        store: SqlStore,
        *,
        timeout: float = 30.0,
        billing: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.billing = billing
        self.clock = clock or time.time
        self.beat_seconds = min(timeout / 3, MAX_BEAT_SECONDS)
        # Who this is, taken when it starts (in the process that serves, after any fork).
        self.id = ""
        self.host = ""
        self.pid = 0
        self.started_at = 0.0
        self._sql = _Statements(store)
        self._task: asyncio.Task[None] | None = None

    async def register(self) -> None:
        """Join: from now on the store's calls carry this instance's id."""
        values = {
            "p_id": self.id,
            "p_host": self.host,
            "p_pid": self.pid,
            "p_started_at": self.started_at,
            "p_now": self.clock(),
        }
        await self.store.run(lambda: single(Exec(self._sql.register, values)))
        self.store.instance_id = self.id

    async def beat(self) -> None:
        """Say this instance is alive: one UPDATE of one row."""
        values = {"p_id": self.id, "p_now": self.clock()}
        changed = await self.store.run(lambda: single(Exec(self._sql.beat, values)))
        if not changed:
            # Taken for dead (no beat for the timeout): another instance settled the calls
            # this one had in flight. Their own settles now change nothing.
            logger.warning(
                "instance %s was taken for dead (no heartbeat for %s s): its calls in "
                "flight were settled as %s; registering again",
                self.id,
                self.timeout,
                HUB_CRASHED,
            )
            await self.register()

    async def recover(self) -> int:
        """Settle the calls of every dead instance, and of calls no live instance owns;
        the number of calls settled."""
        try:
            settled = await self.store.run(lambda: self._recover(charge=True))
        except Exception as exc:
            if not refused_by_database(exc):
                raise
            # A charge the meter triggers refuse (a balance past its floor): the calls are
            # settled at no charge rather than left in flight for ever.
            logger.error("recovered calls could not be charged (%r); settled at no charge", exc)
            settled = await self.store.run(lambda: self._recover(charge=False))
        for call_id, account_id, credits in settled:
            self.store.forget_balance(account_id)
            logger.warning(
                "call %s of account %s settled %s, charged %s credits for its prompt",
                call_id,
                account_id,
                HUB_CRASHED,
                credits_text(credits),
            )
        return len(settled)

    def _recover(self, *, charge: bool) -> Operation[list[tuple[str, int, int]]]:
        now = self.clock()
        cutoff = now - self.timeout
        settled: list[tuple[str, int, int]] = []
        # Never itself, even if its own beat is late: its calls are running here.
        dead = yield Fetch(self._sql.dead, {"p_cutoff": cutoff, "p_me": self.id}, all=True)
        for dead_id, host, pid, beat_at in dead:
            claimed = yield Exec(self._sql.claim, {"p_id": dead_id, "p_cutoff": cutoff})
            if not claimed:
                continue  # another instance recovers it, or it beat just now
            rows = yield Fetch(self._sql.calls_of, {"p_id": dead_id}, all=True)
            why = (
                f"The hub instance serving this call (host {host}, pid {pid}) stopped "
                f"beating at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(beat_at))} "
                "UTC before settling it"
            )
            settled += yield from self._settle(rows, max(beat_at, 0.0), why, charge)
        orphans = yield Fetch(
            self._sql.orphans,
            {"p_cutoff": cutoff, "p_unowned_cutoff": now - UNOWNED_AFTER, "p_me": self.id},
            all=True,
        )
        why = "The hub instance serving this call stopped before settling it"
        settled += yield from self._settle(orphans, now, why, charge)
        return settled

    def _settle(
        self, rows: list[tuple[Any, ...]], end: float, why: str, charge: bool
    ) -> Operation[list[tuple[str, int, int]]]:
        settled = []
        for call_id, account_id, request_at, estimate, input_rate in rows:
            tokens = int(estimate or 0)
            credits = tokens * int(input_rate or 0) if charge and self.billing else 0
            credits = min(credits, MAX_CHARGE)
            finished = max(end, request_at)
            values = {
                "p_id": call_id,
                "p_message": why + ("; charged for its prompt (estimated)." if credits else "."),
                "p_end": finished,
                "p_duration_ms": int((finished - request_at) * 1000),
                "p_tokens": tokens,
                "p_credits": credits,
            }
            if (yield Exec(self._sql.settle_crashed, values)):
                settled.append((str(call_id), int(account_id), credits))
        return settled

    async def deregister(self) -> None:
        """Leave cleanly: the row goes, so nobody waits out the timeout for this one. A
        call it could not settle stays `processing` and is settled as an orphan."""
        await self.store.run(lambda: single(Exec(self._sql.deregister, {"p_id": self.id})))

    async def listing(self) -> list[dict[str, Any]]:
        """The registered instances, whether each beats still, and its calls in flight."""
        rows = await self.store.run(lambda: single(Fetch(self._sql.listing, {}, all=True)))
        cutoff = self.clock() - self.timeout
        return [
            {
                "id": id_,
                "host": host,
                "pid": int(pid),
                "started_at": started_at,
                "beat_at": beat_at,
                "alive": beat_at >= cutoff,
                "calls_in_flight": int(in_flight),
            }
            for id_, host, pid, started_at, beat_at, in_flight in rows
        ]

    # -- the task run beside the app --------------------------------------------------

    async def start(self) -> None:
        """Register, settle what dead instances left, and beat until stopped."""
        self.id = new_call_id()
        self.host = socket.gethostname()[:200]
        self.pid = os.getpid()
        self.started_at = self.clock()
        await self.register()
        await self.recover()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aigne-hub-beat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.deregister()
        except Exception:  # the database is gone: the others take this one for dead
            logger.exception("leaving the instance registry failed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.beat_seconds)
            try:
                await self.beat()
                await self.recover()
            except Exception:
                logger.exception("heartbeat or recovery failed; trying again")
