"""Every operator action on the store, behind one object.

The actions live in one module per concern (accounts, keys, ledger, rates, calls,
credentials, login links); this facade only gathers them. It is kept because its callers —
the CLI's commands, the admin and usage APIs, the pages, the tests — each reach across
several concerns with one store: one `Admin(store)` is one argument where seven objects
would be seven, and the method names say the concern already (`grant`, `list_rates`).
"""

from __future__ import annotations

from hub.store.calls import Calls
from hub.store.credentials import Credentials
from hub.store.keys import Keys
from hub.store.ledger import Ledger
from hub.store.login_links import LoginLinks
from hub.store.rates import CALL_TYPES, RATE_COLUMNS, Rates

__all__ = ["CALL_TYPES", "RATE_COLUMNS", "Admin"]


class Admin(Keys, Ledger, Rates, Calls, Credentials, LoginLinks):
    """What `aigne-hub keys|credits|rates|calls` and the tests do to a store."""
