"""What the middlewares need from storage, as Protocols; hub.store implements them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from middleware.call import Call, CallType
from middleware.scopes import ModelScope


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as the auth middleware sees it (never the secret itself)."""

    key_id: str
    account_id: int
    user_did: str
    app_did: str | None
    is_admin: bool
    revoked: bool
    expires_at: float | None
    # The models the key may call; None: every model.
    models: ModelScope | None = None
    # The key has a spend cap: its calls are admitted against it too.
    budgeted: bool = False


@dataclass(frozen=True, slots=True)
class Rate:
    """Credits (integer units of 10**-10) per token or per image."""

    model: str
    call_type: CallType
    input_rate: int
    output_rate: int
    cached_rate: int | None = None
    image_rate: int | None = None
    cache_write_rate: int | None = None


class KeyStore(Protocol):
    async def find_key(self, key_hash: str) -> KeyRecord | None:
        """The key whose hash this is, revoked or not; None if there is none."""
        ...

    def touch_key(self, key_id: str) -> None:
        """Note that the key was used (may be written lazily)."""
        ...


class AccountRecord(NamedTuple):
    account_id: int
    is_admin: bool
    # Sessions signed with an older number are void (the person signed out since).
    session_epoch: int = 0


class AccountLookup(Protocol):
    async def find_account(self, user_did: str) -> AccountRecord | None:
        """The account of a user DID, for session logins."""
        ...


class RateBook(Protocol):
    async def rate(self, model: str, call_type: CallType) -> Rate | None:
        """The rate for a model and call type, or None if it is unpriced."""
        ...


SETTLE_REFUSED = "settle_refused"


class SettleRefused(Exception):
    """The store cannot write a call's record as it is (a charge past the ledger's bounds,
    a value its columns cannot hold): a retry would fail the same way. The store has
    recorded the call `failed` with error code SETTLE_REFUSED and no charge instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InsufficientCredit(Exception):
    """The account cannot pay for the call: its balance, less what its calls in flight
    hold, is at or below zero. Nothing was recorded or held."""

    def __init__(self, balance: int, held: int) -> None:
        super().__init__(f"balance {balance}, held {held}")
        self.balance = balance
        self.held = held


class BudgetExceeded(Exception):
    """A cap on spending refuses the call: what its period has spent plus what calls in
    flight hold has reached it. Nothing was recorded or held."""

    def __init__(
        self,
        scope: str,
        budget: int,
        period: str,
        spent: int,
        held: int,
        resets_at: float | None,
    ) -> None:
        super().__init__(f"{scope} budget {budget} per {period}: spent {spent}, held {held}")
        self.scope = scope  # "key" or "account"
        self.budget = budget
        self.period = period  # day, week, month (UTC calendar periods) or life
        self.spent = spent
        self.held = held
        self.resets_at = resets_at  # epoch seconds; None: never (a cap for life)


class CallLog(Protocol):
    async def open_call(self, call: Call) -> None:
        """Record the call as `processing`, durably, before it goes upstream.

        When the call carries a hold (`call.hold`, set by the credit check), the record is
        also its admission, one atomic step shared by every process using the store: the
        call is recorded, holding `call.hold` until its settle, only if the account's
        balance less what its calls in flight hold is above zero, and each spend cap of
        its key and account (what the period spent plus what is held) is not reached;
        otherwise nothing is written and InsufficientCredit or BudgetExceeded is raised.
        """
        ...

    async def settle(self, call: Call) -> None:
        """Commit final record, meter event and balance change in one transaction, which
        also releases the call's hold.

        Keyed by call id: a second settle of the same call changes nothing. The write must
        be committed even if the caller is cancelled while awaiting it: queue it before the
        first await (the ModelCall middleware does not pay for a cancel scope per call).
        Raises SettleRefused when the record cannot be written as it is.
        """
        ...


class ModelCatalog(Protocol):
    def resolve(self, model: str) -> tuple[str, str] | None:
        """(provider, upstream model) for a model name as asked, or None if unknown."""
        ...


class CallObserver(Protocol):
    """Sees every call begin and end (metrics, logs); must not block or raise."""

    def opened(self, call: Call) -> None: ...

    def settled(self, call: Call) -> None: ...


# -- rate limits ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quota:
    """The limits of one scope per minute and at once; None: no such limit."""

    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None

    def __bool__(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.concurrent is not None

    def over(self, override: Quota | None) -> Quota:
        """This quota with an override's figures where it has them (0 there: no limit)."""
        if override is None:
            return self
        return Quota(
            *(
                None if mine == 0 else mine if mine is not None else base
                for mine, base in (
                    (override.rpm, self.rpm),
                    (override.tpm, self.tpm),
                    (override.concurrent, self.concurrent),
                )
            )
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    """One scope whose counters a call takes from: `key:<id>`, `account:<id>`, ..."""

    scope: str
    quota: Quota


@dataclass(frozen=True, slots=True)
class Count:
    """How much of a bucket's window is used, after an admission (or at its refusal)."""

    requests: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Admission:
    """A limiter's answer: admitted or not, and what each bucket has used this window."""

    admitted: bool
    counts: tuple[Count, ...]
    # Seconds until the current window ends (when requests and tokens come back).
    reset: float
    # The window the call was counted in, for correcting its tokens at the end.
    window: int = 0
    # When refused: the bucket and the limit ("requests", "tokens", "concurrent").
    refused_bucket: int = -1
    refused_limit: str = ""


class LimiterUnavailable(Exception):
    """The shared limiter cannot be reached: the middleware fails open or closed."""


class RateLimiter(Protocol):
    """Counters of requests and tokens per window, and leases of concurrent calls."""

    async def admit(self, lease: str, buckets: tuple[Bucket, ...], tokens: int) -> Admission:
        """Check every bucket and, only if all have room, take one request, `tokens` tokens
        and (where limited) a concurrency lease from each, as one atomic step. Raises
        LimiterUnavailable when the limiter's store cannot be reached."""
        ...

    def release(
        self, lease: str, buckets: tuple[Bucket, ...], window: int, token_change: int
    ) -> None:
        """The call ended: give back its concurrency leases, and correct the tokens it
        reserved by `token_change` (used minus reserved). Must not block or raise: the
        work may be done in the background (a lease's expiry covers a lost release)."""
        ...


class LimitOverrides(Protocol):
    async def limit_overrides(self) -> tuple[dict[str, Quota], dict[int, Quota]]:
        """Quotas set per key (by key id) and per account (by id), from a short-lived
        cache: only keys and accounts that have one."""
        ...
