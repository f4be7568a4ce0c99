"""The settle writes a call's record whatever it holds: a record past its bounds, or one
the database refuses, is recorded `failed` at no charge with its hold freed (never left
`processing`); text a column cannot take as it is is mended, and the call charged."""

from __future__ import annotations

import sqlite3

import pytest

from hub.bounds import MAX_CHARGE
from hub.store import SqlStore
from hub.store.admin import Admin
from middleware.call import Usage
from middleware.money import to_units
from middleware.ports import SettleRefused
from tests.hub.test_money_faults import PER_CALL, balanced, books_of, fail_batches, funded
from tests.hub.test_store import a_call

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("tokens", "charge", "why"),
    [
        (2**31, PER_CALL, "input_tokens = 2147483648 does not fit"),  # PostgreSQL's INTEGER
        (3, MAX_CHARGE + 1, "is past the bound of one call"),
    ],
)
async def test_a_record_past_its_bounds_is_recorded_failed_and_frees_its_hold(
    store: SqlStore, tokens: int, charge: int, why: str
) -> None:
    account = await funded(store)
    call = a_call(account, charge)
    call.status, call.hold = "processing", to_units("0.1")
    await store.open_call(call)
    call.status = "success"
    call.usage = Usage(input_tokens=tokens, output_tokens=4)

    with pytest.raises(SettleRefused, match=why):
        await store.settle(call)

    books = await books_of(store)
    assert books["calls"] == [("failed", 0, "settle_refused")]
    balanced(books, charged_calls=0)


@pytest.mark.parametrize(
    ("said", "recorded"),
    [
        # An upstream error message in French: recorded as it is.
        ("Modèle indisponible", "Modèle indisponible"),
        # With a lone surrogate from a broken JSON escape (PostgreSQL refuses those):
        # mended, and the call recorded and charged all the same.
        ("Modèle indisponible \ud800", "Modèle indisponible ?"),
    ],
)
async def test_text_a_column_cannot_hold_as_it_is_is_recorded_mended(
    store: SqlStore, said: str, recorded: str
) -> None:
    account = await funded(store)
    call = a_call(account, PER_CALL)
    call.fail("upstream_error", said)

    await store.settle(call)

    [row] = await Admin(store).list_calls()
    assert row["error_message"] == recorded
    assert int(row["credits"]) == PER_CALL
    balanced(await books_of(store), charged_calls=1)


class _CheckViolation(Exception):
    """What asyncpg raises for a record PostgreSQL refuses (integrity, class 23)."""

    sqlstate = "23514"


@pytest.mark.parametrize(
    "refusal",
    [sqlite3.IntegrityError("CHECK constraint failed"), _CheckViolation("check violation")],
    ids=["sqlite-error", "postgres-error"],
)
async def test_a_record_the_database_refuses_is_recorded_failed_and_frees_its_hold(
    store: SqlStore, refusal: BaseException
) -> None:
    account = await funded(store)
    call = a_call(account, PER_CALL)
    call.status, call.hold = "processing", to_units("0.1")
    await store.open_call(call)
    call.status = "success"
    fail_batches(store, refusal, times=1)

    with pytest.raises(SettleRefused, match="the database refused the record"):
        await store.settle(call)

    books = await books_of(store)
    assert books["calls"] == [("failed", 0, "settle_refused")]
    balanced(books, charged_calls=0)
