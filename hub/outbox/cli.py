"""`aigne-hub outbox list|retry`: what the outbox holds for its sinks, and retrying now."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from hub.store.admin import Admin
from hub.store.outbox import OutboxStore

Command = Callable[[Admin, argparse.Namespace], Awaitable[Any]]
Runner = Callable[[Command], Callable[..., int]]


def add_commands(commands: Any, common: argparse.ArgumentParser, run: Runner) -> None:
    """Register the `outbox` commands; `run` opens the store around one (hub.cli._run)."""
    outbox = commands.add_parser(
        "outbox", parents=[common], help="ledger rows waiting for external sinks"
    ).add_subparsers(title="outbox")
    listing = outbox.add_parser(
        "list", parents=[common], help="rows not yet delivered to every sink, newest first"
    )
    listing.add_argument(
        "--all", action="store_true", help="delivered rows too, not only those waiting"
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    listing.set_defaults(handler=run(_list))
    retry = outbox.add_parser(
        "retry", parents=[common], help="try undelivered rows again at the next round"
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=int, help="the outbox row's id (outbox list)")
    which.add_argument("--all", action="store_true", help="every row not yet delivered")
    retry.set_defaults(handler=run(_retry))


async def _list(admin: Admin, args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.limit < 1:
        raise ValueError("--limit must be 1 or more")
    rows = await OutboxStore(admin.store).listing(everything=args.all, limit=args.limit)
    for row in rows:
        row.pop("report")
        row["next_at"] = row["next_at"] or None  # 0: due at once
    return rows


async def _retry(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    outbox_id = None if args.all else args.id
    count = await OutboxStore(admin.store).retry(outbox_id)
    if outbox_id is not None and count == 0:
        raise LookupError(f"no undelivered outbox row {outbox_id}")
    return {"deliveries_due_now": count}
