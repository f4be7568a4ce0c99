"""The operator's API, `/api/admin/...` (hub.admin_api, hub.budget_api, hub.usage_api):
admins only, every other caller gets 403 `admin_only`."""

from __future__ import annotations

from typing import Any

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
    USER_FILTER,
)
from hub.openapi.spec import (
    ANY_OBJECT,
    CREDITS_IN,
    CREDITS_OUT,
    LIMIT_IN,
    Operation,
    Param,
    array,
    nullable,
    obj,
    string,
)

TAG = "admin"
LIMITS_IN = obj({"rpm": LIMIT_IN, "tpm": LIMIT_IN, "concurrent": LIMIT_IN})
LIMITS_OUT = {name: nullable({"type": "integer"}) for name in ("rpm", "tpm", "concurrent")}
RATE_IN = obj(
    {
        "model": string(maxLength=200),
        "type": string(enum=["chatCompletion", "embedding", "imageGeneration"]),
        "per": string(
            "Rates per token (default) or per million tokens.", enum=["token", "million"]
        ),
        "input": CREDITS_IN,
        "output": CREDITS_IN,
        "cached": nullable(CREDITS_IN),
        "cache_write": nullable(CREDITS_IN),
        "image": nullable(CREDITS_IN),
    },
    ("model",),
)
RATE_ROWS = array(obj({"model": string(), "type": string(), "input_rate": CREDITS_OUT}))
TYPE = Param(
    "type",
    "The call type (default chatCompletion).",
    string(enum=["chatCompletion", "embedding", "imageGeneration"]),
)


def _admin(
    method: str, path: str, summary: str, *, errors: tuple[int, ...] = (), **more: Any
) -> Operation:
    """An admin operation: every one may answer 403 to a caller who is not an admin."""
    return Operation(method, path, summary, TAG, errors=(403, *errors), **more)


OPERATIONS = (
    _admin("GET", "/api/admin/accounts", "List accounts", response=array(ANY_OBJECT)),
    _admin(
        "POST",
        "/api/admin/accounts/{did}/sign-out",
        "End every session of an account",
        response=obj({"user_did": string(), "signed_out": {"type": "boolean"}}),
        errors=(404,),
    ),
    _admin(
        "PUT",
        "/api/admin/accounts/{did}/limits",
        "Set an account's rate limits",
        body=LIMITS_IN,
        response=obj({"user_did": string(), **LIMITS_OUT}),
        errors=(400, 413),
    ),
    _admin(
        "PUT",
        "/api/admin/accounts/{did}/budget",
        "Cap an account's spending",
        body=CAP_IN,
        response=obj({"user_did": string(), **CAP_FIELDS}),
        errors=(400, 413),
    ),
    _admin("GET", "/api/admin/keys", "List keys", query=(USER_FILTER,), response=KEY_ROWS),
    _admin(
        "POST",
        "/api/admin/keys",
        "Create a key for any user (rate limits and admin rights included)",
        body=obj(
            {
                "user": string("The owner's DID.", maxLength=200),
                "admin": {"type": "boolean", "description": "Make the owner an admin."},
                **KEY_FIELDS,
                "rpm": LIMIT_IN,
                "tpm": LIMIT_IN,
                "concurrent": LIMIT_IN,
            },
            ("user",),
        ),
        status=201,
        response=CREATED_KEY,
        errors=(400, 413),
    ),
    _admin("DELETE", "/api/admin/keys/{key_id}", "Revoke a key", response=REVOKED, errors=(404,)),
    _admin(
        "PUT",
        "/api/admin/keys/{key_id}/limits",
        "Set a key's rate limits",
        body=LIMITS_IN,
        response=obj({"id": string(), **LIMITS_OUT}),
        errors=(400, 404, 413),
    ),
    _admin(
        "PUT",
        "/api/admin/keys/{key_id}/budget",
        "Cap a key's spending",
        body=CAP_IN,
        response=obj({"id": string(), **CAP_FIELDS}),
        errors=(400, 404, 413),
    ),
    _admin(
        "GET",
        "/api/admin/grants",
        "List credit grants",
        query=(USER_FILTER, *PAGE),
        response=LEDGER_ROWS,
        errors=(400,),
    ),
    _admin(
        "POST",
        "/api/admin/grants",
        "Grant credits (a negative amount takes them back)",
        body=obj(
            {
                "user": string(maxLength=200),
                "amount": CREDITS_IN,
                "note": string(maxLength=500),
            },
            ("user", "amount"),
        ),
        response=obj({"user_did": string(), "granted": CREDITS_OUT, "balance": CREDITS_OUT}),
        errors=(400, 413),
    ),
    _admin("GET", "/api/admin/rates", "List rates", response=RATE_ROWS),
    _admin(
        "PUT",
        "/api/admin/rates",
        "Set rates, all or none",
        body=array(RATE_IN),
        response=RATE_ROWS,
        errors=(400, 413),
    ),
    _admin(
        "DELETE",
        "/api/admin/rates",
        "Remove a rate",
        query=(Param("model", "The model whose rate goes."), TYPE),
        response=obj({"model": string(), "type": string(), "removed": {"type": "boolean"}}),
        errors=(404,),
    ),
    _admin("GET", "/api/admin/providers", "Providers and their health", response=array(ANY_OBJECT)),
    _admin(
        "GET",
        "/api/admin/credentials",
        "List stored provider keys (masked)",
        response=array(ANY_OBJECT),
    ),
    _admin(
        "POST",
        "/api/admin/credentials",
        "Store a provider key (encrypted at rest)",
        body=obj(
            {
                "provider": string("A configured provider's name."),
                "key": string("The provider's API key."),
                "weight": {"type": "integer", "minimum": 0},
            },
            ("provider", "key"),
        ),
        status=201,
        response=ANY_OBJECT,
        errors=(400, 404, 413),
    ),
    _admin(
        "DELETE",
        "/api/admin/credentials/{credential_id}",
        "Remove a stored provider key",
        response=obj({"id": string(), "removed": {"type": "boolean"}}),
        errors=(404,),
    ),
    _admin(
        "GET",
        "/api/admin/calls",
        "Everyone's calls, one page (or CSV)",
        query=(USER_FILTER, *CALL_FILTERS),
        response=CALL_ROWS,
        also=("text/csv",),
        errors=(400,),
    ),
    _admin(
        "GET",
        "/api/admin/usage",
        "Everyone's usage per time bucket",
        query=(USER_FILTER, *USAGE_FILTERS),
        response=USAGE,
        errors=(400,),
    ),
    _admin(
        "GET",
        "/api/admin/meter-events",
        "Everyone's meter events (credits spent per call)",
        query=(USER_FILTER, *PAGE),
        response=LEDGER_ROWS,
        errors=(400,),
    ),
)
