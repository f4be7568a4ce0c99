"""The caller's own API, `/api/user/...` (hub.usage_api, hub.admin_api, hub.budget_api):
any key or session, each seeing only its own account."""

from __future__ import annotations

from hub.openapi.shared import (
    CALL_FILTERS,
    CALL_ROWS,
    CAP_FIELDS,
    CAP_IN,
    CREATED_KEY,
    KEY_FIELDS,
    KEY_ROWS,
    LEDGER_ROWS,
    PAGE,
    REVOKED,
    USAGE,
    USAGE_FILTERS,
)
from hub.openapi.spec import CREDITS_OUT, Operation, obj, string

TAG = "user"

OPERATIONS = (
    Operation(
        "GET",
        "/api/user/balance",
        "The caller's balance and totals",
        TAG,
        response=obj({"user_did": string(), "balance": CREDITS_OUT}, ("user_did",)),
    ),
    Operation(
        "GET",
        "/api/user/calls",
        "The caller's calls, one page (or CSV)",
        TAG,
        query=CALL_FILTERS,
        response=CALL_ROWS,
        also=("text/csv",),
        errors=(400,),
    ),
    Operation(
        "GET",
        "/api/user/usage",
        "The caller's usage per time bucket",
        TAG,
        query=USAGE_FILTERS,
        response=USAGE,
        errors=(400,),
    ),
    Operation(
        "GET",
        "/api/user/grants",
        "Credits granted to the caller",
        TAG,
        query=PAGE,
        response=LEDGER_ROWS,
        errors=(400,),
    ),
    Operation(
        "GET",
        "/api/user/meter-events",
        "The caller's meter events (credits spent per call)",
        TAG,
        query=PAGE,
        response=LEDGER_ROWS,
        errors=(400,),
    ),
    Operation("GET", "/api/user/keys", "The caller's keys", TAG, response=KEY_ROWS),
    Operation(
        "POST",
        "/api/user/keys",
        "Create a key for oneself (it can only narrow what the caller may do)",
        TAG,
        body=obj(KEY_FIELDS),
        status=201,
        response=CREATED_KEY,
        errors=(400, 413),
    ),
    Operation(
        "DELETE",
        "/api/user/keys/{key_id}",
        "Revoke one of one's own keys",
        TAG,
        response=REVOKED,
        errors=(404,),
    ),
    Operation(
        "PUT",
        "/api/user/keys/{key_id}/budget",
        "Cap one of one's own keys (only ever narrower)",
        TAG,
        body=CAP_IN,
        response=obj({"id": string(), **CAP_FIELDS}),
        errors=(400, 403, 404, 413),
    ),
)
