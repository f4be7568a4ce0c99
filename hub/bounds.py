"""The bounds of every value that enters the hub from outside, checked in one place.

The admin and user APIs, the CLI and the settings file all read money, rates, weights and
text through these functions, so a value one of them accepts is a value the others accept
and both databases can store. A value out of bounds is a `HubError` 400 `invalid_field`
whose `param` names the field (the CLI prints its message).

The bounds, and why:

- Money is integer units of 10**-10 credit in BIGINT columns (int64 on SQLite and
  PostgreSQL: at most about 922,337,203 credits). A balance stays within
  ±MAX_BALANCE (100,000,000 credits), a ninth of that, and one call is charged at most
  MAX_CHARGE (1,000,000 credits): the rest is room for a lifetime of charges in the
  ledger's sums. A grant that would take a balance past MAX_BALANCE is refused before it
  is written (SQLite would silently turn an overflowing sum into a float), and so is a
  charge that would take it below -MAX_BALANCE (by the meter triggers, migration 9: the
  call is recorded failed, `settle_refused`).
- A rate is at most MAX_TOKEN_RATE (0.01 credit a token: 10,000 credits per million
  tokens) or MAX_IMAGE_RATE (1,000 credits an image): far above any provider's price,
  and low enough that a call within MAX_CALL_TOKENS tokens is always within MAX_CHARGE.
- Weights and other whole numbers in INTEGER columns fit int32 (PostgreSQL's INTEGER).
- Text has no NUL and no lone surrogates (PostgreSQL refuses both), and fits its column.
  Text that is sent on in an HTTP header (provider keys) is visible ASCII only: no spaces,
  CR, LF or other control characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

from middleware.errors import HubError
from middleware.money import SCALE, credits_text

INT32_MAX = 2**31 - 1

MAX_BALANCE = 100_000_000 * SCALE
MAX_GRANT = MAX_BALANCE
MAX_CHARGE = 1_000_000 * SCALE
MAX_TOKEN_RATE = SCALE // 100
MAX_IMAGE_RATE = 1_000 * SCALE
# Tokens one call may be billed for at the top rate (MAX_CALL_TOKENS × MAX_TOKEN_RATE is
# MAX_CHARGE): no model has a context near it. A charge past MAX_CHARGE is not written:
# the call is recorded failed (`settle_refused`) and the error logged.
MAX_CALL_TOKENS = MAX_CHARGE // MAX_TOKEN_RATE
MAX_WEIGHT = 1_000_000
MAX_KEY_DAYS = 36_500  # a hundred years: later dates do not fit a calendar
MAX_LINK_MINUTES = 7 * 24 * 60

_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def refuse(name: str, message: str) -> HubError:
    return HubError(400, "invalid_field", message, name)


# -- text ---------------------------------------------------------------------------


def text(value: Any, name: str, longest: int = 200) -> str:
    """Required, non-empty text the store can hold."""
    if not isinstance(value, str) or not value:
        raise HubError(400, "missing_field", f"The field '{name}' is required.", name)
    return fits(value, name, longest)


def optional_text(value: Any, name: str, longest: int = 200) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise refuse(name, f"'{name}' must be text.")
    return fits(value, name, longest)


def fits(value: str, name: str, longest: int = 200) -> str:
    """Text of at most `longest` characters without NUL or lone surrogates."""
    if len(value) > longest or "\x00" in value:
        raise refuse(name, f"'{name}' must be text of at most {longest} characters, no NUL.")
    try:
        value.encode("utf-8")  # fails on a lone surrogate ("\ud800" from a JSON escape)
    except UnicodeEncodeError as exc:
        raise refuse(name, f"'{name}' is not valid Unicode text.") from exc
    return value


def header_safe(value: Any, name: str, longest: int = 1000) -> str:
    """Text sent on in an HTTP header, such as a provider key: visible ASCII only."""
    checked = text(value, name, longest)
    if not _HEADER_SAFE.fullmatch(checked):
        raise refuse(
            name,
            f"'{name}' may hold only visible ASCII characters (no spaces, line breaks or "
            "control characters).",
        )
    return checked


# -- numbers ------------------------------------------------------------------------


def whole(value: Any, name: str, lowest: int, highest: int) -> int:
    """A whole number from `lowest` to `highest` (never a bool, never a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise refuse(name, f"'{name}' must be a whole number from {lowest} to {highest}.")
    return value


def weight(value: Any, name: str = "weight") -> int:
    """A provider key's share of the traffic."""
    return whole(value, name, 1, MAX_WEIGHT)


def number(value: Any, name: str, lowest: float, highest: float) -> float:
    """A finite number from `lowest` to `highest` (days, minutes)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or not lowest <= value <= highest  # exact for ints of any size
    ):
        raise refuse(name, f"'{name}' must be a number from {lowest:g} to {highest:g}.")
    return float(value)


def expires_days(value: Any, name: str = "expires_days") -> float:
    """Days until a key expires: more than 0, at most MAX_KEY_DAYS."""
    try:
        days = number(value, name, 0, MAX_KEY_DAYS)
    except HubError:
        days = 0
    if days == 0:
        raise refuse(
            name, f"'{name}' must be a number of days, more than 0, at most {MAX_KEY_DAYS}."
        )
    return days


# -- money --------------------------------------------------------------------------


def credits(value: Any, name: str, highest: int, *, divisor: int = 1, each: str = "") -> int:
    """Credits (a number, or its text) divided by `divisor`, as integer units of at most
    `highest` either way; `each` ("per token") ends the message that says so."""
    number = isinstance(value, int | float | str | Decimal) and not isinstance(value, bool)
    written = str(value).strip() if number else ""
    try:
        if not 0 < len(written) <= 60:
            raise InvalidOperation
        # Exact: enough digits that no value short enough to get here is rounded.
        with localcontext(prec=200):
            amount = Decimal(written) * SCALE / divisor
    except ArithmeticError:  # decimal's InvalidOperation, Overflow
        amount = Decimal("nan")
    if not amount.is_finite():
        given = f" not {written[:40]!r}" if written else ""
        raise refuse(name, f"'{name}' must be a number of credits{',' if given else ''}{given}.")
    if amount != amount.to_integral_value():
        raise refuse(name, f"'{name}' must be a number of credits with at most 10 decimals.")
    if abs(amount) > highest:
        most = credits_text(highest * divisor)
        raise refuse(name, f"'{name}' must be at most {most} credits{each}.")
    return int(amount)


def grant_amount(value: Any, name: str = "amount") -> int:
    """A grant: not zero, at most MAX_GRANT credits either way."""
    units = credits(value, name, MAX_GRANT)
    if units == 0:
        raise refuse(name, f"'{name}' must not be zero.")
    return units


def check_grant(units: int, name: str = "amount") -> int:
    """A grant in units (as the store takes it): at most MAX_GRANT either way."""
    if abs(units) > MAX_GRANT:
        raise refuse(name, f"'{name}' must be at most {credits_text(MAX_GRANT)} credits.")
    return units


def check_balance(balance: int, units: int, name: str = "amount") -> int:
    """The balance after adding `units`, refused if that takes it past ±MAX_BALANCE (a
    grant that brings an out-of-bounds balance back toward zero is let through)."""
    after = balance + units
    if (units > 0 and after > MAX_BALANCE) or (units < 0 and after < -MAX_BALANCE):
        raise refuse(
            name,
            f"This would take the balance ({credits_text(balance)}) past "
            f"±{credits_text(MAX_BALANCE)} credits.",
        )
    return after


def rate(value: Any, name: str, *, per_million: bool = False, image: bool = False) -> int:
    """A rate in units per token (given per token, or per million tokens) or per image."""
    highest = MAX_IMAGE_RATE if image else MAX_TOKEN_RATE
    divisor = 1_000_000 if per_million and not image else 1
    each = " per image" if image else (" per million tokens" if divisor > 1 else " per token")
    units = credits(value, name, highest, divisor=divisor, each=each)
    if units < 0:
        # A negative rate would credit the caller for every call.
        raise refuse(name, f"'{name}' must not be negative.")
    return units


def rate_entry(entry: Any, call_types: tuple[str, ...]) -> tuple[str, str, dict[str, Any]]:
    """One rate as `PUT /api/admin/rates` and `aigne-hub rates set` give it:
    {model, type, per: token|million, input, output, cached, cache_write, image}, as
    (model, call type, column values in units)."""
    if not isinstance(entry, Mapping):
        raise HubError(400, "invalid_request", "A rate must be an object.")
    call_type = entry.get("type", "chatCompletion")
    if call_type not in call_types:
        raise refuse("type", f"Unknown type {call_type!r} (known: {', '.join(call_types)}).")
    per = entry.get("per", "token")
    if per not in ("token", "million"):
        raise refuse("per", "'per' is token or million.")
    required = {
        # An image call is priced per image; its prompt costs nothing unless given a rate.
        "input": call_type != "imageGeneration",
        "output": call_type == "chatCompletion",
        "image": call_type == "imageGeneration",
    }

    def units(name: str) -> int | None:
        if entry.get(name) is None:
            if required.get(name, False):
                why = " (give 0 to make output free)" if name == "output" else ""
                message = f"'{name}' is required for a {call_type} rate{why}."
                raise HubError(400, "missing_field", message, name)
            return None
        return rate(entry[name], name, per_million=per == "million", image=name == "image")

    values = {
        "input_rate": units("input") or 0,
        "output_rate": units("output") or 0,
        "cached_rate": units("cached"),
        "cache_write_rate": units("cache_write"),
        "image_rate": units("image"),
    }
    return text(entry.get("model"), "model"), call_type, values


# -- rate limits ----------------------------------------------------------------------

LIMIT_FIELDS = ("rpm", "tpm", "concurrent")
MAX_LIMIT = 10**15


def limit_overrides(values: Mapping[str, Any]) -> dict[str, int | None]:
    """The rate limits given for a key or an account, of `rpm`, `tpm` and `concurrent`: each
    a whole number (0: no limit for it) or null / "default" (the configured default again).
    Fields not given are left as they are, so the result has only those given."""
    found: dict[str, int | None] = {}
    for name in LIMIT_FIELDS:
        if name not in values:
            continue
        value = values[name]
        if value is None or value == "default":
            found[name] = None
            continue
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        found[name] = whole(value, name, 0, MAX_LIMIT)
    return found


# -- key scopes -----------------------------------------------------------------------

MAX_MODEL_PATTERNS = 50
MAX_MODEL_PATTERN = 200  # as long as a model name may be (middleware.parse.MAX_TEXT)


def model_patterns(value: Any, name: str = "models") -> list[str] | None:
    """The models a key may call: a list of patterns such as `openai/*` (`*`: any run of
    characters), or one text of them separated by commas (as a form or the CLI gives them);
    None or absent for every model. Each pattern is printable, without commas, at most
    MAX_MODEL_PATTERN characters; at most MAX_MODEL_PATTERNS of them, repeats dropped."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise refuse(name, f"'{name}' must be a list of model patterns such as 'openai/*'.")
    patterns = list(dict.fromkeys(p.strip() for p in value if p.strip()))
    if not patterns:
        raise refuse(name, f"'{name}' needs at least one pattern (null: every model).")
    if len(patterns) > MAX_MODEL_PATTERNS:
        raise refuse(name, f"'{name}' may hold at most {MAX_MODEL_PATTERNS} patterns.")
    for pattern in patterns:
        if len(pattern) > MAX_MODEL_PATTERN or not pattern.isprintable() or "," in pattern:
            raise refuse(
                name,
                f"'{name}': each pattern must be 1 to {MAX_MODEL_PATTERN} printable "
                f"characters without commas, not {pattern[:50]!r}.",
            )
    return patterns


# -- spend caps -------------------------------------------------------------------------

BUDGET_PERIODS = ("day", "week", "month", "life")


def budget(values: Mapping[str, Any]) -> tuple[int | None, str | None] | None:
    """A spend cap as given for a key or an account: `budget` in credits (more than 0, at
    most MAX_BALANCE; null: no cap) and `period` (day, week, month: UTC calendar periods;
    life: never resets; default month). None when no `budget` is given at all."""
    if "budget" not in values:
        if values.get("period") is not None:
            raise refuse("budget", "'period' needs a 'budget' (null: no cap).")
        return None
    if values["budget"] is None:
        return None, None
    units = credits(values["budget"], "budget", MAX_BALANCE)
    if units <= 0:
        raise refuse("budget", "'budget' must be more than 0 credits (null: no cap).")
    period = values.get("period") or "month"
    if period not in BUDGET_PERIODS:
        raise refuse("period", f"'period' is one of {', '.join(BUDGET_PERIODS)}.")
    return units, str(period)
