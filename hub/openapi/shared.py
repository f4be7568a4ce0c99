"""Schemas and parameters both the admin and the user API use (hub.usage_api's listings,
key creation, spend caps)."""

from __future__ import annotations

from hub.openapi.spec import (
    ANY_OBJECT,
    CREDITS_IN,
    CREDITS_OUT,
    Param,
    Schema,
    array,
    nullable,
    obj,
    string,
)

WHOLE = string(pattern="^[0-9]{0,12}$")
UNIX_TIME = string("A Unix time in seconds.")

PAGE = (
    Param("limit", "Rows per page (1 to 500; default 50).", WHOLE),
    Param("offset", "Rows to skip (from the previous page's `next_offset`).", WHOLE),
)
CALL_FILTERS = (
    *PAGE,
    Param("app", "Only calls of this app DID."),
    Param("model", "Only calls of this model."),
    Param("status", "Only calls with this status (e.g. success, failed)."),
    Param("request_id", "Only the call with this request id."),
    Param(
        "client_format",
        "Only calls made in this client format (openai, aigne, anthropic, responses, gemini).",
    ),
    Param("since", "Calls from this Unix time on.", UNIX_TIME),
    Param("until", "Calls before this Unix time.", UNIX_TIME),
    Param("format", "`csv`: the whole filtered list as a spreadsheet.", string(enum=["csv"])),
)
USAGE_FILTERS = (
    Param("group", "Time bucket: hour or day (default day).", string(enum=["hour", "day"])),
    Param(
        "by",
        "Split by model, user, app or provider, or `total` (default model).",
        string(enum=["model", "user", "app", "provider", "total"]),
    ),
    Param("since", "From this Unix time (default: 7 days ago).", UNIX_TIME),
    Param("until", "Up to this Unix time.", UNIX_TIME),
    Param("app", "Only this app DID."),
    Param("model", "Only this model."),
)
USER_FILTER = Param("user", "Only this user's DID (default: everyone's).")


def page(row: Schema) -> Schema:
    return obj(
        {"data": array(row), "next_offset": nullable({"type": "integer"})},
        ("data", "next_offset"),
    )


CALL_ROWS = page(ANY_OBJECT)
LEDGER_ROWS = page(obj({"user_did": string(), "amount": CREDITS_OUT}))
USAGE = obj(
    {
        "group": string(),
        "by": string(),
        "percentiles_sampled": {"type": "boolean"},
        "data": array(ANY_OBJECT),
    },
    ("group", "by", "percentiles_sampled", "data"),
)

KEY_FIELDS: dict[str, Schema] = {
    "name": string("A name to tell the key by.", maxLength=200),
    "app": string("The app DID the key is for.", maxLength=200),
    "expires_days": {"type": "number", "description": "Days until the key stops working."},
    "models": nullable(
        array(string("A model pattern such as `openai/*`.", maxLength=200))
        | {"description": "The models the key may call (null: every model)."}
    ),
    "budget": nullable(CREDITS_IN),
    "period": string(enum=["day", "week", "month", "life"]),
}
CREATED_KEY = obj(
    {
        "id": string(),
        "key": string("The secret: shown this once only, stored as a hash."),
        "user_did": string(),
        "models": nullable(array(string())),
        "budget": nullable(CREDITS_OUT),
        "period": nullable(string()),
    },
    ("id", "key", "user_did"),
)
KEY_ROWS = array(obj({"id": string(), "user_did": string()}, ("id", "user_did")))
REVOKED = obj(
    {"id": string(), "revoked": {"type": "boolean"}, "was_live": {"type": "boolean"}},
    ("id", "revoked"),
)

CAP_IN = obj(
    {
        "budget": nullable(CREDITS_IN) | {"description": "The cap in credits (null: no cap)."},
        "period": string(enum=["day", "week", "month", "life"]),
    },
    ("budget",),
)
CAP_FIELDS: dict[str, Schema] = {
    "budget": nullable(CREDITS_OUT),
    "period": nullable(string()),
    "spent": CREDITS_OUT,
    "resets_at": nullable({"type": "number"}),
}
