"""Every statement the store runs, built with SQLAlchemy Core and compiled once per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect

from hub.store.budgets import turn_period, within_budget
from hub.store.raw import Prepared
from hub.store.schema import (
    accounts,
    ai_model_rates,
    api_keys,
    credit_grants,
    meter_events,
    model_calls,
)

CALL_COLUMNS = [c.name for c in model_calls.columns]
FINAL_COLUMNS = [
    "status",
    "response_at",
    "duration_ms",
    "ttfb_ms",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "image_count",
    "credits",
    "http_status",
    "error_code",
    "error_message",
    "provider",
    "upstream_model",
    "usage_estimated",
    "attempts",
    "credential",
]


def _upsert_for(dialect: Dialect) -> Any:
    if dialect.name == "sqlite":
        return sqlite_insert
    return pg_insert


def _can_pay() -> tuple[Any, ...]:
    """An admission's conditions on the account: balance less holds above zero, and its cap
    (if any) not reached by what the period has spent and what is held."""
    return (
        accounts.c.id == param("account_id"),
        accounts.c.balance - accounts.c.held > 0,
        within_budget(accounts),
    )


def param(name: str) -> Any:
    # Prefixed so bind names never collide with the column names SQLAlchemy reserves.
    return bindparam(f"p_{name}")


class Statements:
    """The compiled statements for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        def prep(statement: Any) -> Prepared:
            return Prepared(statement, dialect)

        self.find_key = prep(
            select(
                api_keys.c.id,
                api_keys.c.account_id,
                accounts.c.did,
                api_keys.c.app_did,
                accounts.c.is_admin,
                api_keys.c.revoked_at,
                api_keys.c.expires_at,
                api_keys.c.allowed_models,
                api_keys.c.budget,
            )
            .select_from(api_keys.join(accounts, api_keys.c.account_id == accounts.c.id))
            .where(api_keys.c.key_hash == param("hash"))
        )
        self.touch_key = prep(
            api_keys.update().where(api_keys.c.id == param("id")).values(last_used_at=param("now"))
        )
        self.find_account = prep(
            select(accounts.c.id, accounts.c.is_admin, accounts.c.session_epoch).where(
                accounts.c.did == param("did")
            )
        )
        self.insert_account = prep(
            accounts.insert().values(
                did=param("did"),
                name=param("name"),
                is_admin=param("is_admin"),
                balance=0,
                session_epoch=0,
                held=0,
                created_at=param("now"),
            )
        )
        self.set_admin = prep(
            accounts.update().where(accounts.c.id == param("id")).values(is_admin=param("is_admin"))
        )
        self.balance = prep(select(accounts.c.balance).where(accounts.c.id == param("id")))
        # A call's admission: its hold is added only while the balance, less what calls in
        # flight hold, is above zero. One statement, so it is exact under concurrency: on
        # PostgreSQL (READ COMMITTED) an UPDATE that waited for another's row lock checks
        # its WHERE again on the row as that one left it; SQLite has one writer at a time.
        # The account's spend cap is checked (and its period turned) in the same statement.
        self.hold_credit = prep(
            accounts.update()
            .where(*_can_pay())
            .values(held=accounts.c.held + param("held"), **turn_period(accounts))
        )
        self.all_rates = prep(
            select(
                ai_model_rates.c.model,
                ai_model_rates.c.type,
                ai_model_rates.c.input_rate,
                ai_model_rates.c.output_rate,
                ai_model_rates.c.cached_rate,
                ai_model_rates.c.image_rate,
                ai_model_rates.c.cache_write_rate,
                ai_model_rates.c.updated_at,
            ).order_by(ai_model_rates.c.model, ai_model_rates.c.type)
        )
        rate_values = {
            "input_rate": param("input_rate"),
            "output_rate": param("output_rate"),
            "cached_rate": param("cached_rate"),
            "image_rate": param("image_rate"),
            "cache_write_rate": param("cache_write_rate"),
            "updated_at": param("now"),
        }
        self.update_rate = prep(
            ai_model_rates.update()
            .where(ai_model_rates.c.model == param("model"), ai_model_rates.c.type == param("type"))
            .values(**rate_values)
        )
        self.insert_rate = prep(
            ai_model_rates.insert().values(model=param("model"), type=param("type"), **rate_values)
        )
        self.delete_rate = prep(
            ai_model_rates.delete().where(
                ai_model_rates.c.model == param("model"), ai_model_rates.c.type == param("type")
            )
        )
        self.insert_call = prep(
            model_calls.insert().values({name: param(name) for name in CALL_COLUMNS})
        )
        # PostgreSQL: the admission and the `processing` row in one statement (one round
        # trip of the writer's connection, which every call of the batch waits behind): the
        # row is written only if the hold was taken. SQLite has no UPDATE inside WITH, and
        # its statements cost no round trip: there the store runs the two in turn.
        self.admit_call: Prepared | None = None
        if dialect.name == "postgresql":
            taken = (
                accounts.update()
                .where(*_can_pay())
                .values(held=accounts.c.held + param("held"), **turn_period(accounts))
                .returning(accounts.c.id)
                .cte("taken")
            )
            typed = [cast(param(name), model_calls.c[name].type) for name in CALL_COLUMNS]
            self.admit_call = prep(
                model_calls.insert().from_select(CALL_COLUMNS, select(*typed).select_from(taken))
            )
        # The settle: one upsert per call. It finalizes the `processing` row — or writes the
        # whole record if the queued insert was lost — and does nothing to a settled row, so
        # a second settle is a no-op. The ledger row and balance change are written by the
        # `model_calls_meter_*` triggers (see migrate.py) inside this same statement.
        upsert = _upsert_for(dialect)(model_calls).values(
            {name: param(name) for name in CALL_COLUMNS}
        )
        self.settle_call = prep(
            upsert.on_conflict_do_update(
                index_elements=[model_calls.c.id],
                set_={name: upsert.excluded[name] for name in FINAL_COLUMNS},
                where=model_calls.c.status == "processing",
            )
        )
        self.insert_grant = prep(
            credit_grants.insert().values(
                account_id=param("id"),
                amount=param("amount"),
                note=param("note"),
                created_at=param("now"),
            )
        )
        self.insert_key = prep(
            api_keys.insert().values(
                id=param("id"),
                account_id=param("account_id"),
                key_hash=param("hash"),
                prefix=param("prefix"),
                name=param("name"),
                app_did=param("app_did"),
                created_at=param("now"),
                expires_at=param("expires_at"),
                allowed_models=param("models"),
            )
        )
        self.revoke_key = prep(
            api_keys.update()
            .where(api_keys.c.id == param("id"), api_keys.c.revoked_at.is_(None))
            .values(revoked_at=param("now"))
        )
        self.ledger_totals = prep(
            select(
                accounts.c.balance,
                select(func.coalesce(func.sum(credit_grants.c.amount), 0))
                .where(credit_grants.c.account_id == accounts.c.id)
                .scalar_subquery(),
                select(func.coalesce(func.sum(meter_events.c.amount), 0))
                .where(meter_events.c.account_id == accounts.c.id)
                .scalar_subquery(),
            ).where(accounts.c.id == param("id"))
        )
