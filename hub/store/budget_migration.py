"""Migration 14: spend caps per key and per account (see hub.store.budgets).

The settle's statement keeps the caps' counters, as it keeps the ledger: the meter trigger
that takes a charge from the balance adds it to the account's period spend, and a trigger
of the key's adds it to the key's and gives back the key's hold. A charge counts in a
period only if its call was admitted in it (`request_at >= budget_start`).

On PostgreSQL, triggers on one event fire in the order of their names: the key's
(`model_calls_spend_key_*`) fire after the meter's and the hold's, so a settle locks the
account's row before the key's, in the order an admission takes them: a key's row is only
ever waited for by one who holds its account's, so keys add no deadlock. And a cap being
set on a key (which locks the account's row first, see hub.store.budget_admin) sees every
settle of the key's calls either committed or not yet past the account's row, whose key
trigger then reads the new cap (each statement of a trigger reads what is committed).
"""

from __future__ import annotations

from sqlalchemy.engine import Dialect

from hub.bounds import MAX_BALANCE

_COUNTS_HERE = "CASE WHEN NEW.request_at >= budget_start THEN NEW.credits ELSE 0 END"

_COLUMNS = [
    "ADD COLUMN budget BIGINT",
    "ADD COLUMN budget_period VARCHAR(8)",
    "ADD COLUMN budget_start FLOAT",
    "ADD COLUMN budget_spent BIGINT NOT NULL DEFAULT 0",
]

# The meter triggers of migration 9, whose UPDATE of the account also counts its spend.
_SQLITE_METER = f"""
CREATE TRIGGER model_calls_meter_{{name}} AFTER {{event}} ON model_calls
WHEN {{when}}
BEGIN
    SELECT RAISE(ABORT, 'balance_out_of_bounds')
    WHERE (SELECT balance FROM accounts WHERE id = NEW.account_id) - NEW.credits < {-MAX_BALANCE};
    INSERT INTO meter_events (account_id, call_id, amount, created_at)
    VALUES (NEW.account_id, NEW.id, NEW.credits, COALESCE(NEW.response_at, NEW.request_at));
    UPDATE accounts
    SET balance = balance - NEW.credits, budget_spent = budget_spent + {_COUNTS_HERE}
    WHERE id = NEW.account_id;
END"""
_PG_METER = f"""
CREATE OR REPLACE FUNCTION aigne_hub_meter_call() RETURNS trigger AS $$
DECLARE
    after BIGINT;
BEGIN
    INSERT INTO meter_events (account_id, call_id, amount, created_at)
    VALUES (NEW.account_id, NEW.id, NEW.credits, COALESCE(NEW.response_at, NEW.request_at));
    UPDATE accounts
    SET balance = balance - NEW.credits, budget_spent = budget_spent + {_COUNTS_HERE}
    WHERE id = NEW.account_id
    RETURNING balance INTO after;
    IF after < {-MAX_BALANCE} THEN
        RAISE EXCEPTION 'balance_out_of_bounds' USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql"""

# A settled call: its key's hold back, its charge counted if admitted in the key's period.
# Keys without a cap and without a hold are left alone (no row written, no lock taken).
_KEY_SETTLED = f"""UPDATE api_keys SET held = held - OLD.key_held,
        budget_spent = budget_spent + {_COUNTS_HERE}
    WHERE id = NEW.api_key_id
    AND (OLD.key_held <> 0 OR (NEW.credits <> 0 AND NEW.request_at >= budget_start))"""
# A call written already final (its `processing` row was never written): its charge only.
_KEY_WRITTEN = """UPDATE api_keys SET budget_spent = budget_spent + NEW.credits
    WHERE id = NEW.api_key_id AND NEW.request_at >= budget_start"""
_KEY_WHEN = {
    "update": (
        "UPDATE",
        "OLD.status = 'processing' AND NEW.status <> 'processing' AND NEW.api_key_id IS NOT NULL",
    ),
    "insert": (
        "INSERT",
        "NEW.status <> 'processing' AND NEW.credits <> 0 AND NEW.api_key_id IS NOT NULL",
    ),
}
_PG_KEY_FUNCTION = f"""
CREATE OR REPLACE FUNCTION aigne_hub_key_budget() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        {_KEY_SETTLED};
    ELSE
        {_KEY_WRITTEN};
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql"""


def _meter_cases() -> list[tuple[str, str, str]]:
    final = "NEW.status <> 'processing' AND NEW.credits <> 0"
    return [
        ("update", "UPDATE", f"OLD.status = 'processing' AND {final}"),
        ("insert", "INSERT", final),
    ]


def v14_budgets(dialect: Dialect) -> list[str]:
    statements = [
        *(f"ALTER TABLE {t} {column}" for t in ("accounts", "api_keys") for column in _COLUMNS),
        "ALTER TABLE api_keys ADD COLUMN held BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE model_calls ADD COLUMN key_held BIGINT NOT NULL DEFAULT 0",
    ]
    if dialect.name == "postgresql":
        statements.append(_PG_METER)
        statements.append(_PG_KEY_FUNCTION)
        for name, (event, when) in _KEY_WHEN.items():
            statements.append(
                f"CREATE TRIGGER model_calls_spend_key_{name} AFTER {event} ON model_calls "
                f"FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION aigne_hub_key_budget()"
            )
        return statements
    for name, event, when in _meter_cases():
        statements.append(f"DROP TRIGGER model_calls_meter_{name}")
        statements.append(_SQLITE_METER.format(name=name, event=event, when=when))
    for name, (event, when) in _KEY_WHEN.items():
        body = _KEY_SETTLED if name == "update" else _KEY_WRITTEN
        statements.append(
            f"CREATE TRIGGER model_calls_spend_key_{name} AFTER {event} ON model_calls\n"
            f"WHEN {when}\nBEGIN\n    {body};\nEND"
        )
    return statements
