"""The ledger moves the balance by one rule: every credit_grants row and every meter event
moves accounts.balance in the statement that writes it (database triggers), so the balance
is grants less meter events whoever writes the row."""

from __future__ import annotations

import time

import pytest

from hub.store import SqlStore
from hub.store.admin import Admin
from hub.store.schema import credit_grants
from middleware.money import to_units
from tests.conftest import USER
from tests.hub.test_store import a_call

pytestmark = pytest.mark.anyio


async def test_a_grant_row_moves_the_balance_whoever_writes_it(store: SqlStore) -> None:
    admin = Admin(store)
    account = await admin.ensure_account(USER)
    await admin.grant(USER, to_units(2), "through the hub")
    # A row written beside the hub (an import, a payment service writing its own grants):
    # the balance follows it as it follows the hub's own grants and the calls' charges.
    await store.execute(
        credit_grants.insert().values(
            account_id=account, amount=to_units(3), note="written directly", created_at=time.time()
        )
    )
    call = a_call(account, to_units("0.5"))
    await store.settle(call)

    ledger = await admin.ledger(USER)
    assert ledger == {
        "balance": to_units("4.5"),
        "granted": to_units(5),
        "metered": to_units("0.5"),
    }
