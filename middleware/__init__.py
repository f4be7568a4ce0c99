"""The hub's policies as pure ASGI middlewares, usable in front of any ASGI app."""

from middleware.auth import AuthMiddleware, hash_key, new_api_key
from middleware.billing import BillingMiddleware, price
from middleware.call import Call, CallType, Identity, Usage, get_call, get_identity
from middleware.credit import CreditCheckMiddleware
from middleware.errors import HubError, error_body, send_error
from middleware.limiter_memory import MemoryLimiter
from middleware.limits import LimitPolicy, RateLimitMiddleware
from middleware.model_call import ModelCallMiddleware
from middleware.parse import CallMiddleware
from middleware.ports import (
    AccountLookup,
    BudgetExceeded,
    CallLog,
    InsufficientCredit,
    KeyRecord,
    KeyStore,
    ModelCatalog,
    Quota,
    Rate,
    RateBook,
    RateLimiter,
)
from middleware.scopes import ModelScope

__all__ = [
    "AccountLookup",
    "AuthMiddleware",
    "BillingMiddleware",
    "BudgetExceeded",
    "Call",
    "CallLog",
    "InsufficientCredit",
    "CallMiddleware",
    "CallType",
    "CreditCheckMiddleware",
    "HubError",
    "Identity",
    "KeyRecord",
    "KeyStore",
    "LimitPolicy",
    "MemoryLimiter",
    "ModelScope",
    "ModelCallMiddleware",
    "ModelCatalog",
    "Quota",
    "Rate",
    "RateBook",
    "RateLimitMiddleware",
    "RateLimiter",
    "Usage",
    "error_body",
    "get_call",
    "get_identity",
    "hash_key",
    "new_api_key",
    "price",
    "send_error",
]
