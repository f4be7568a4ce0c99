"""The hub's tables: one SQLAlchemy Core schema for SQLite and PostgreSQL.

Money columns are BigInteger units of 10**-10 credit (see middleware.money): SQLite has no
decimal type and would sum Numeric columns as floats. Times are epoch seconds.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()


def budget_columns() -> list[Column[object]]:
    """A spend cap (migration 14; see hub.store.budgets): NULL budget, no cap."""
    return [
        Column("budget", BigInteger, nullable=True),
        # day, week, month (UTC calendar periods) or life
        Column("budget_period", String(8), nullable=True),
        # The start of the period `budget_spent` counts (epoch seconds, as request_at).
        Column("budget_start", Float, nullable=True),
        # A server default (as the migration's): inserts leave it out.
        Column("budget_spent", BigInteger, nullable=False, server_default="0"),
    ]


schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("did", String(200), nullable=False, unique=True),
    Column("name", String(200), nullable=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    # Materialized: always equals the account's grants minus its meter events.
    Column("balance", BigInteger, nullable=False, default=0),
    # Added by migration 8: bumped when the person signs out, which voids every session
    # cookie signed before (each carries the number it was signed with).
    Column("session_epoch", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    # Added by migration 11: rate limits of this account (NULL: the configured default;
    # 0: no limit), requests and tokens per minute and calls at once.
    Column("limit_rpm", BigInteger, nullable=True),
    Column("limit_tpm", BigInteger, nullable=True),
    Column("limit_concurrent", BigInteger, nullable=True),
    # Added by migration 12: credit held by the account's calls in flight, the sum of their
    # `model_calls.held`. Admission takes a hold only while balance - held is above zero, in
    # the statement that adds it, so every process and instance on the database shares it.
    Column("held", BigInteger, nullable=False, default=0),
    *budget_columns(),
    # Added by migration 16: the account's customer at Stripe, learned from its first paid
    # checkout, so later invoices (which name only the customer) find the account.
    Column("stripe_customer_id", String(255), nullable=True),
)

# One account per Stripe customer (an index: SQLite cannot add a UNIQUE column).
Index("ux_accounts_stripe_customer", accounts.c.stripe_customer_id, unique=True)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("name", String(200), nullable=True),
    Column("app_did", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("expires_at", Float, nullable=True),
    # Added by migration 11: rate limits of this key, as on accounts.
    Column("limit_rpm", BigInteger, nullable=True),
    Column("limit_tpm", BigInteger, nullable=True),
    Column("limit_concurrent", BigInteger, nullable=True),
    # Added by migration 13: the models the key may call, a JSON list of patterns such as
    # "openai/*" (bounds.model_patterns); NULL: every model.
    Column("allowed_models", Text, nullable=True),
    # Added by migration 14: credit held by the key's calls in flight that were admitted
    # against its spend cap (the sum of their `model_calls.key_held`), and the cap.
    Column("held", BigInteger, nullable=False, server_default="0"),
    *budget_columns(),
)

ai_model_rates = Table(
    "ai_model_rates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("type", String(32), nullable=False),
    Column("input_rate", BigInteger, nullable=False),
    Column("output_rate", BigInteger, nullable=False),
    Column("cached_rate", BigInteger, nullable=True),
    Column("image_rate", BigInteger, nullable=True),
    # Added by migration 7: credits per prompt token written to a provider's cache.
    Column("cache_write_rate", BigInteger, nullable=True),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("model", "type", name="uq_ai_model_rates_model_type"),
)

model_calls = Table(
    "model_calls",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("request_id", String(200), nullable=True),
    Column("account_id", Integer, nullable=False),
    Column("user_did", String(200), nullable=False),
    Column("app_did", String(200), nullable=True),
    Column("api_key_id", String(40), nullable=True),
    Column("provider", String(100), nullable=True),
    Column("model", String(200), nullable=False),
    Column("upstream_model", String(200), nullable=True),
    Column("type", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("request_at", Float, nullable=False),
    Column("response_at", Float, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Column("ttfb_ms", Integer, nullable=True),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("image_count", Integer, nullable=False, default=0),
    Column("credits", BigInteger, nullable=False, default=0),
    Column("http_status", Integer, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", String(1000), nullable=True),
    # Added by migration 2: the usage was estimated by the hub, not reported by the provider.
    Column("usage_estimated", Boolean, nullable=False, default=False),
    # Added by migration 3: upstream attempts (credentials tried), and the one that answered.
    Column("attempts", Integer, nullable=False, default=0),
    Column("credential", String(40), nullable=True),
    # Added by migration 7: prompt tokens written to the provider's cache (of input_tokens).
    Column("cache_write_tokens", Integer, nullable=False, default=0),
    # Added by migration 10: the hub instance (process) that opened the call, so that
    # another can settle it if that one dies; and the prompt's tokens as estimated at
    # admission, what such a call is charged (see hub.store.instances).
    Column("instance_id", String(40), nullable=True),
    Column("prompt_estimate", Integer, nullable=True),
    # Added by migration 12: the credit this call holds while `processing` (its worst-case
    # cost); released from accounts.held when the row leaves `processing`, whoever settles it.
    Column("held", BigInteger, nullable=False, default=0),
    # Added by migration 14: the part of `held` also held on the key's spend cap (0 when the
    # key had none at admission); released from api_keys.held when the row leaves
    # `processing`.
    Column("key_held", BigInteger, nullable=False, default=0),
    # Added by migration 18: the wire format the client spoke (openai, aigne, anthropic,
    # responses, gemini), from the route it called; null for calls recorded before.
    Column("client_format", String(16), nullable=True),
)
Index("ix_model_calls_user_time", model_calls.c.user_did, model_calls.c.request_at)
# Added by migration 6: the dashboard and the admin usage API read every user's calls of a
# time window.
Index("ix_model_calls_time", model_calls.c.request_at)
# Partial: only in-flight calls are looked up by status, and a settled call leaves the
# index, so settling costs less than maintaining an index over every call.
Index(
    "ix_model_calls_processing",
    model_calls.c.request_at,
    sqlite_where=model_calls.c.status == "processing",
    postgresql_where=model_calls.c.status == "processing",
)

credit_grants = Table(
    "credit_grants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("note", String(500), nullable=True),
    Column("created_at", Float, nullable=False),
)

meter_events = Table(
    "meter_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    # Unique: the ledger can hold at most one charge per call, whatever retries happen.
    Column("call_id", String(40), nullable=False, unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_meter_events_account", meter_events.c.account_id)
Index("ix_credit_grants_account", credit_grants.c.account_id)

# Added by migration 4: provider keys kept in the database (besides the config file), sealed
# with the hub's encryption key; `masked` is all that is ever shown.
ai_credentials = Table(
    "ai_credentials",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider", String(100), nullable=False),
    Column("sealed", String(2000), nullable=False),
    Column("masked", String(20), nullable=False),
    Column("weight", Integer, nullable=False, default=100),
    Column("created_at", Float, nullable=False),
    Column("removed_at", Float, nullable=True),
)

# Added by migration 10: each running hub process, and when it last said it was alive.
# One that stops beating for `limits.instance_timeout` is dead: another settles its calls.
hub_instances = Table(
    "hub_instances",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("beat_at", Float, nullable=False),
)

# Added by migration 5: one-time sign-in links (`aigne-hub admin login-link`), kept hashed.
login_links = Table(
    "login_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_did", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
)

# Added by migration 16: every payment that granted credits, by the payment service's own
# event id, so a delivery sent twice (or retried after a lost answer) grants once.
payment_events = Table(
    "payment_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(20), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("source", "event_id", name="uq_payment_events_event"),
)

# Added by migration 17: every ledger row (meter event, grant), copied by a trigger in the
# statement that writes it, for the dispatcher to deliver to external sinks (hub.outbox).
# `enrolled` turns 1 once the dispatcher has made the row's deliveries (one per sink).
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("ledger_id", Integer, nullable=False),
    Column("account_id", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("call_id", String(40), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("enrolled", Integer, nullable=False, default=0),
    UniqueConstraint("kind", "ledger_id", name="uq_outbox_ledger"),
)
Index(
    "ix_outbox_unenrolled",
    outbox.c.id,
    sqlite_where=outbox.c.enrolled == 0,
    postgresql_where=outbox.c.enrolled == 0,
)
# One row per (outbox row, sink): pending, failing (attempts, next try, last error) or
# delivered. `report`: the summed report the row was counted into, fixed before it is sent.
outbox_deliveries = Table(
    "outbox_deliveries",
    metadata,
    Column("outbox_id", Integer, ForeignKey("outbox.id"), primary_key=True),
    Column("sink", String(100), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    Column("last_error", String(500), nullable=True),
    Column("report", String(100), nullable=True),
    Column("delivered_at", Float, nullable=True),
)
Index(
    "ix_outbox_deliveries_due",
    outbox_deliveries.c.sink,
    outbox_deliveries.c.next_at,
    sqlite_where=outbox_deliveries.c.state != "delivered",
    postgresql_where=outbox_deliveries.c.state != "delivered",
)
Index("ix_outbox_deliveries_report", outbox_deliveries.c.report)
# The dispatcher's lease: one row, taken and renewed by one UPDATE (hub.store.outbox).
outbox_lease = Table(
    "outbox_lease",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(40), nullable=False),
    Column("expires_at", Float, nullable=False),
)
