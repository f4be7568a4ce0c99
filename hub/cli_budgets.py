"""`aigne-hub budgets ...` and the budget options of `aigne-hub keys`: spend caps from the
shell (registered by hub.cli, which runs each command on an open store)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from hub import bounds
from hub.store.admin import Admin
from hub.store.budget_admin import Budgets

Register = Callable[[Any], Any]


def budget_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", metavar="CREDITS", help="cap the spending at this many credits")
    parser.add_argument(
        "--period",
        choices=bounds.BUDGET_PERIODS,
        help="the cap's period: day, week, month (UTC calendar periods; the default) or life",
    )


def given(args: argparse.Namespace) -> tuple[int | None, str | None] | None:
    """The cap the options give (None: none given), checked as the APIs check it."""
    values: dict[str, Any] = {}
    if args.budget is not None:
        values["budget"] = args.budget
    if args.period is not None:
        values["period"] = args.period
    return bounds.budget(values)


def register(commands: Any, keys: Any, common: argparse.ArgumentParser, run: Register) -> None:
    """Add `keys budget` and `budgets set|clear|show`."""
    key_budget = keys.add_parser(
        "budget", parents=[common], help="cap a key's spending (--clear: no cap)"
    )
    key_budget.add_argument("key_id")
    budget_options(key_budget)
    key_budget.add_argument("--clear", action="store_true", help="remove the key's cap")
    key_budget.set_defaults(handler=run(_key_budget))

    budgets = commands.add_parser(
        "budgets", parents=[common], help="accounts' spending caps"
    ).add_subparsers(title="budgets")
    set_cap = budgets.add_parser("set", parents=[common], help="cap an account's spending")
    set_cap.add_argument("user", help="the account's user DID")
    budget_options(set_cap)
    set_cap.set_defaults(handler=run(_account_budget), clear=False)
    clear = budgets.add_parser("clear", parents=[common], help="remove an account's cap")
    clear.add_argument("user", help="the account's user DID")
    clear.set_defaults(handler=run(_account_budget), clear=True, budget=None, period=None)
    show = budgets.add_parser("show", parents=[common], help="an account's cap and spending")
    show.add_argument("user", help="the account's user DID")
    show.set_defaults(handler=run(_account_show))


def _cap(args: argparse.Namespace) -> tuple[int | None, str | None]:
    if args.clear:
        if args.budget is not None or args.period is not None:
            raise ValueError("give --clear, or --budget (and --period), not both")
        return None, None
    cap = given(args)
    if cap is None:
        raise ValueError("give --budget CREDITS (and --period), or --clear")
    return cap


async def set_new_key_budget(admin: Admin, key_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """`keys create --budget`: the new key's cap, as its listing shows it."""
    cap = given(args)
    if cap is None:
        return {}
    budgets = Budgets(admin.store)
    await budgets.set_key_budget(key_id, *cap)
    return _shown(await budgets.key_budget(key_id))


async def _key_budget(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    key_id = bounds.text(args.key_id, "key_id", 40)
    budgets = Budgets(admin.store)
    if not await budgets.set_key_budget(key_id, *_cap(args)):
        raise LookupError(f"no key with id {args.key_id}")
    return {"id": key_id, **_shown(await budgets.key_budget(key_id))}


async def _account_budget(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = bounds.text(args.user, "user")
    cap = _cap(args)
    budgets = Budgets(admin.store)
    await budgets.set_account_budget(await admin.ensure_account(user), *cap)
    return {"user_did": user, **_shown(await budgets.account_budget(user))}


async def _account_show(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = bounds.text(args.user, "user")
    found = await Budgets(admin.store).account_budget(user)
    if found is None:
        raise LookupError(f"no account {user}")
    return {"user_did": user, **_shown(found)}


def _shown(row: dict[str, Any] | None) -> dict[str, Any]:
    assert row is not None  # set just now; keys and accounts are never deleted
    return {k: row[k] for k in ("budget", "period", "spent", "resets_at")}
