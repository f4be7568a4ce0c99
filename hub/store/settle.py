"""Writing a call's final record: the settle, and the values every call record is made of.

The settle is the one write that charges a call: its final record, whose leaving
`processing` makes the database write the meter event, move the balance and release the
hold (triggers: hub.store.migrate). It is idempotent (a row already final is left as it
is), so a retry after a dropped connection can never charge twice; a record that cannot be
written as it is (a charge past its bound, a number past its column, a value the database
refuses) is written `failed` at no charge instead, never left `processing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Integer, String

from hub.bounds import INT32_MAX, MAX_CHARGE
from hub.store.raw import Bulk, refused_by_database
from hub.store.schema import model_calls
from middleware.call import Call
from middleware.money import credits_text
from middleware.ports import SETTLE_REFUSED, SettleRefused

if TYPE_CHECKING:
    from hub.store.sql import SqlStore


async def settle_call(store: SqlStore, call: Call) -> None:
    """Write the call's final record (see the module); raises SettleRefused when it was
    recorded `failed` at no charge instead, and whatever else failed for the caller to
    retry (a dropped connection, a lock)."""
    charge = call.charge or 0
    values = fit_texts(call_values(call, store.instance_id))
    problem = out_of_bounds(values)
    settle = store.sql.settle_call
    try:
        # Queued before the first await (see CallLog.settle), whatever is written.
        await store.run(Bulk(settle, refused_values(values, problem) if problem else values, 1))
    except Exception as exc:
        if problem or not refused_by_database(exc):
            raise
        problem = f"the database refused the record: {type(exc).__name__}: {exc}"
        await store.run(Bulk(settle, refused_values(values, problem), phase=1))
    if problem:
        raise SettleRefused(problem)
    store.charged(call.identity.account_id, charge)


def call_values(call: Call, instance_id: str | None) -> dict[str, Any]:
    usage = call.usage
    finished = call.status != "processing"
    # What the call is charged if its instance dies before settling it (counted by the
    # credit check; None when it did not run: a hub that does not bill).
    estimate = call.prompt_estimate
    return {
        "p_id": call.id,
        "p_request_id": call.request_id,
        "p_account_id": call.identity.account_id,
        "p_user_did": call.identity.user_did,
        "p_app_did": call.app_did,
        "p_api_key_id": call.identity.key_id,
        "p_provider": call.provider,
        "p_model": call.model,
        "p_upstream_model": call.upstream_model,
        "p_type": call.call_type,
        "p_status": call.status,
        "p_stream": call.stream,
        "p_request_at": call.started_at,
        "p_response_at": call.started_at + call.duration_ms / 1000 if finished else None,
        "p_duration_ms": call.duration_ms if finished else None,
        "p_ttfb_ms": call.ttfb_ms,
        "p_input_tokens": usage.input_tokens if usage else 0,
        "p_output_tokens": usage.output_tokens if usage else 0,
        "p_cached_tokens": usage.cached_tokens if usage else 0,
        "p_cache_write_tokens": usage.cache_write_tokens if usage else 0,
        "p_image_count": usage.images if usage else 0,
        "p_credits": call.charge or 0,
        "p_http_status": call.http_status,
        "p_error_code": call.error_code,
        "p_error_message": call.error_message,
        "p_usage_estimated": call.usage_estimated,
        "p_attempts": call.attempts,
        "p_credential": call.credential,
        "p_instance_id": instance_id,
        "p_prompt_estimate": None if finished or estimate is None else min(estimate, INT32_MAX),
        # Set by open_call on a call it admits. A settle never writes it: it finalizes the
        # row that carries the hold, or (the row never written) holds nothing.
        "p_held": 0,
        "p_key_held": 0,
        "p_client_format": call.dialect,
    }


# The call's whole numbers kept in INTEGER columns (int32 on PostgreSQL).
_COUNTS = tuple(
    f"p_{c.name}"
    for c in model_calls.columns
    if isinstance(c.type, Integer) and not isinstance(c.type, BigInteger)
)
_TEXTS = {
    f"p_{c.name}": int(c.type.length or 0)
    for c in model_calls.columns
    if isinstance(c.type, String) and c.type.length
}


def out_of_bounds(values: dict[str, Any]) -> str | None:
    """Why a settle's values cannot be written as they are (None when they can): checked
    before the write, so both databases refuse the same records and SQLite never turns
    an overflowing balance into a float."""
    charge = values["p_credits"]
    if not 0 <= charge <= MAX_CHARGE:
        return f"a charge of {credits_text(charge)} credits is past the bound of one call"
    for name in _COUNTS:
        value = values[name]
        if value is not None and not 0 <= value <= INT32_MAX:
            return f"{name[2:]} = {value} does not fit its column"
    return None


def fit_texts(values: dict[str, Any]) -> dict[str, Any]:
    """The record's text cut to fit its columns, without NUL or lone surrogates (which
    PostgreSQL refuses): a model name a client made up must not make its call unwritable.
    Plain text, the usual case, costs three checks a column."""
    for name, longest in _TEXTS.items():
        value = values[name]
        if isinstance(value, str) and (
            len(value) > longest or "\x00" in value or not (value.isascii() or _encodes(value))
        ):
            value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
            values[name] = value[:longest]
    return values


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def refused_values(values: dict[str, Any], problem: str) -> dict[str, Any]:
    """The call recorded `failed` at no charge, with the reason, every number clamped to
    fit its column: what can be written when the real record cannot."""
    fitted = dict(values)
    for name in _COUNTS:
        if fitted[name] is not None:
            fitted[name] = min(max(fitted[name], 0), INT32_MAX)
    fitted.update(
        p_status="failed",
        p_credits=0,
        p_error_code=SETTLE_REFUSED,
        p_error_message=problem,
    )
    return fit_texts(fitted)
