"""Migration 15: credit grants move the balance by trigger, as meter events do."""

from __future__ import annotations

from sqlalchemy.engine import Dialect

from hub.bounds import MAX_BALANCE

# Migration 15: a grant moves the balance as a meter event does, by a trigger on the ledger
# row itself: inserting a credit_grants row adds its amount to accounts.balance in the same
# statement, so the balance is grants less meter events by one rule, whoever writes the
# row. The trigger refuses a grant that would take the balance past ±MAX_BALANCE (one that
# brings an out-of-bounds balance back toward zero passes), as the meter triggers refuse a
# charge below the floor (migration 9): SQLite would turn an overflowing sum into a float.
_GRANT_OUT_OF_BOUNDS = (
    "(NEW.amount > 0 AND {balance} + NEW.amount > {top})"
    " OR (NEW.amount < 0 AND {balance} + NEW.amount < -{top})"
)
_GRANT = {
    "sqlite": [
        """
CREATE TRIGGER credit_grants_balance AFTER INSERT ON credit_grants
BEGIN
    SELECT RAISE(ABORT, 'balance_out_of_bounds') WHERE {refused};
    UPDATE accounts SET balance = balance + NEW.amount WHERE id = NEW.account_id;
END"""
    ],
    "postgresql": [
        """
CREATE OR REPLACE FUNCTION aigne_hub_grant() RETURNS trigger AS $$
DECLARE
    after BIGINT;
BEGIN
    UPDATE accounts SET balance = balance + NEW.amount WHERE id = NEW.account_id
    RETURNING balance INTO after;
    IF {refused} THEN
        RAISE EXCEPTION 'balance_out_of_bounds' USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql""",
        """
CREATE TRIGGER credit_grants_balance AFTER INSERT ON credit_grants
FOR EACH ROW EXECUTE FUNCTION aigne_hub_grant()""",
    ],
}


def v15_grants_by_trigger(dialect: Dialect) -> list[str]:
    # PostgreSQL checks the balance the UPDATE left (`after` is before + amount already).
    balance = (
        "(SELECT balance FROM accounts WHERE id = NEW.account_id)"
        if dialect.name == "sqlite"
        else "after - NEW.amount"
    )
    refused = _GRANT_OUT_OF_BOUNDS.format(balance=balance, top=MAX_BALANCE)
    return [statement.replace("{refused}", refused) for statement in _GRANT[dialect.name]]
