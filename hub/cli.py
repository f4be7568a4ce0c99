"""`aigne-hub`: serve the hub, and manage keys, credits, rates and calls from the shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet

from hub import admin_input, bounds, cli_budgets
from hub.outbox import cli as outbox_cli
from hub.secrets import SecretBox, load_box, write_key_file
from hub.settings import (
    LOG_FORMAT,
    ConfigError,
    Settings,
    check_shared_limits,
    load_settings,
    public_url,
    sqlite_path,
    trusted_proxies,
    worker_count,
)
from hub.startup_notes import next_steps, provider_warnings, providers_with_stored_keys
from hub.store import SqlStore
from hub.store.admin import CALL_TYPES, Admin
from middleware.errors import HubError
from middleware.money import credits_text

if TYPE_CHECKING:
    import socket

    import uvicorn

MONEY_COLUMNS = {
    "balance",
    "granted",
    "metered",
    "credits",
    "input_rate",
    "output_rate",
    "cached_rate",
    "cache_write_rate",
    "image_rate",
    "amount",
    "budget",
    "spent",
}
MAX_CALLS_LISTED = 100_000
# What each worker process loads (it reads its settings as `serve` left them, below).
WORKER_APP = "hub.app:from_environment"
METRICS_DIR = "AIGNE_HUB_METRICS_DIR"

TIME_COLUMNS = {
    "created_at",
    "last_used_at",
    "revoked_at",
    "expires_at",
    "request_at",
    "response_at",
    "updated_at",
    "started_at",
    "beat_at",
    "resets_at",
    "next_at",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"aigne-hub: {exc}", file=sys.stderr)
        return 2
    try:
        result: int = args.handler(settings, args)
        sys.stdout.flush()  # here, so a reader that has gone is met below, not at exit
        return result
    except BrokenPipeError:
        # The output went to a reader that stopped early (`aigne-hub calls list | head`):
        # nothing is wrong and nothing more can be said; stdout is pointed at /dev/null
        # so Python's flush at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, LookupError, ArithmeticError, HubError) as exc:
        # A HubError is a value out of bounds: the same rule, and words, as the API's.
        print(f"aigne-hub: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a database that cannot be opened, and the like
        if os.environ.get("AIGNE_HUB_DEBUG"):
            raise
        print(f"aigne-hub: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _common_options(default: str | None, *, create: bool = True) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--config", default=default, help="TOML settings file (default: $AIGNE_HUB_CONFIG)"
    )
    options.add_argument(
        "--json",
        action="store_true",
        default=default if default is not None else False,
        help="print JSON for scripts",
    )
    if create:
        options.add_argument(
            "--create",
            action="store_true",
            default=default if default is not None else False,
            help="make the database if there is none yet (else the command stops, rather "
            "than use a new, empty database the running hub knows nothing of)",
        )
    return options


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aigne-hub")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    # --config and --json are accepted before or after the command: on the subcommands
    # they default to SUPPRESS, so an option given before the command is not reset there.
    common = _common_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="aigne-hub",
        parents=[_common_options(None)],
        description="AIGNE Hub: an AI gateway with credit billing",
    )
    parser.add_argument("--version", action="version", version=f"aigne-hub {_version()}")
    commands = parser.add_subparsers(title="commands")

    # `serve` makes its database when there is none: it takes no --create.
    serve = commands.add_parser(
        "serve", parents=[_common_options(argparse.SUPPRESS, create=False)], help="run the hub"
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="comma-separated proxy addresses or networks (or *) whose X-Forwarded-Proto and "
        "X-Forwarded-For are believed (default: server.forwarded_allow_ips, else none)",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        help='worker processes: a number, or "auto" for one per core (default: '
        "server.workers, else 1)",
    )
    serve.set_defaults(handler=_serve)

    db = commands.add_parser("db", parents=[common], help="database schema").add_subparsers(
        title="db"
    )
    up = db.add_parser("upgrade", parents=[common], help="create or upgrade the schema")
    up.set_defaults(handler=_run(_db_upgrade))

    keys = commands.add_parser("keys", parents=[common], help="API keys").add_subparsers(
        title="keys"
    )
    create = keys.add_parser("create", parents=[common], help="create a key (shown once)")
    create.add_argument("--user", required=True, help="the owner's user DID")
    create.add_argument("--name", help="a label for the key")
    create.add_argument("--app", help="the app DID calls with this key are attributed to")
    create.add_argument("--expires-days", type=float, help="expire after this many days")
    create.add_argument("--admin", action="store_true", help="make the owner an admin")
    create.add_argument(
        "--models",
        action="append",
        metavar="PATTERNS",
        help="the only models the key may call, e.g. 'openai/*' (repeat or separate by "
        "commas; default: every model)",
    )
    _limit_options(create)
    cli_budgets.budget_options(create)
    create.set_defaults(handler=_run(_keys_create))
    key_limits = keys.add_parser(
        "limits", parents=[common], help="set a key's rate limits (0: none; default: config)"
    )
    key_limits.add_argument("key_id")
    _limit_options(key_limits)
    key_limits.set_defaults(handler=_run(_keys_limits))
    account_limits = commands.add_parser(
        "limits",
        parents=[common],
        help="set an account's rate limits (0: none; default: the configuration's)",
    )
    account_limits.add_argument("--user", required=True, help="the account's user DID")
    _limit_options(account_limits)
    account_limits.set_defaults(handler=_run(_account_limits))
    listing = keys.add_parser("list", parents=[common], help="list keys (never the secrets)")
    listing.add_argument("--user", help="only this user's keys")
    listing.set_defaults(handler=_run(_keys_list))
    revoke = keys.add_parser(
        "revoke", parents=[common], help="revoke a key by its id (its owner is signed out)"
    )
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_run(_keys_revoke))
    cli_budgets.register(commands, keys, common, _run)

    credits = commands.add_parser(
        "credits", parents=[common], help="credit balances"
    ).add_subparsers(title="credits")
    grant = credits.add_parser("grant", parents=[common], help="grant credits to a user")
    grant.add_argument("user", help="user DID")
    grant.add_argument("amount", help="credits, e.g. 10 or 0.5 (negative takes credits back)")
    grant.add_argument("--note")
    grant.set_defaults(handler=_run(_credits_grant))
    balance = credits.add_parser("balance", parents=[common], help="a user's balance and ledger")
    balance.add_argument("user", help="user DID")
    balance.set_defaults(handler=_run(_credits_balance))

    rates = commands.add_parser("rates", parents=[common], help="model rates").add_subparsers(
        title="rates"
    )
    set_rate = rates.add_parser("set", parents=[common], help="set a model's rate")
    set_rate.add_argument("model", help="provider/model, e.g. openai/gpt-4o-mini")
    set_rate.add_argument(
        "--type",
        choices=CALL_TYPES,
        help="the kind of call priced (default: imageGeneration with --image, else chatCompletion)",
    )
    set_rate.add_argument(
        "--input", help="credits per input token (required, except for images: default 0)"
    )
    set_rate.add_argument(
        "--output", help="credits per output token (required for chat; 0 makes output free)"
    )
    set_rate.add_argument("--cached", help="credits per cached input token (a cache read)")
    set_rate.add_argument(
        "--cache-write", help="credits per input token written to the provider's cache"
    )
    set_rate.add_argument("--image", help="credits per image")
    set_rate.add_argument(
        "--per-million", action="store_true", help="token rates are per million tokens"
    )
    set_rate.set_defaults(handler=_run(_rates_set))
    list_rates = rates.add_parser("list", parents=[common], help="list rates")
    list_rates.set_defaults(handler=_run(_rates_list))
    remove_rate = rates.add_parser("remove", parents=[common], help="remove a model's rate")
    remove_rate.add_argument("model")
    remove_rate.add_argument("--type", default="chatCompletion", choices=CALL_TYPES)
    remove_rate.set_defaults(handler=_run(_rates_remove))

    creds = commands.add_parser(
        "credentials", parents=[common], help="provider keys kept in the database (encrypted)"
    ).add_subparsers(title="credentials")
    add_cred = creds.add_parser("add", parents=[common], help="store a provider key, encrypted")
    add_cred.add_argument("provider", help="a provider name from the configuration")
    add_cred.add_argument("--key", default="-", help="the key, or - to read it from stdin")
    add_cred.add_argument("--weight", type=int, default=100, help="its share of the traffic")
    add_cred.set_defaults(handler=_run(_credentials_add))
    list_creds = creds.add_parser("list", parents=[common], help="stored keys, masked")
    list_creds.set_defaults(handler=_run(_credentials_list))
    remove_cred = creds.add_parser("remove", parents=[common], help="remove a stored key")
    remove_cred.add_argument("credential_id")
    remove_cred.set_defaults(handler=_run(_credentials_remove))
    rotate = creds.add_parser(
        "rotate-key",
        parents=[common],
        help="encrypt the stored keys again with a new encryption key",
    )
    rotate.add_argument(
        "--new-key-file",
        help="where to write the new key (default: the configured key file; required "
        "when the key comes from AIGNE_HUB_ENCRYPTION_KEY or the config)",
    )
    rotate.set_defaults(handler=_run(_credentials_rotate_key))

    admin_cmd = commands.add_parser(
        "admin", parents=[common], help="people's access to the dashboard"
    ).add_subparsers(title="admin")
    link = admin_cmd.add_parser(
        "login-link", parents=[common], help="print a one-time sign-in link"
    )
    link.add_argument("--user", required=True, help="the user DID to sign in")
    link.add_argument("--minutes", type=float, default=10, help="how long it stays valid")
    link.add_argument("--url", help="the hub's address (default: from the configuration)")
    link.set_defaults(handler=_run(_login_link))
    sign_out = admin_cmd.add_parser(
        "sign-out", parents=[common], help="end every dashboard session of a user"
    )
    sign_out.add_argument("--user", required=True, help="the user DID to sign out")
    sign_out.set_defaults(handler=_run(_sign_out))

    calls = commands.add_parser("calls", parents=[common], help="model calls").add_subparsers(
        title="calls"
    )
    list_calls = calls.add_parser(
        "list", parents=[common], help="recent calls, in-flight ones included"
    )
    list_calls.add_argument("--user", help="only this user's calls (user DID)")
    list_calls.add_argument("--model", help="only this model, e.g. openai/gpt-4o-mini")
    list_calls.add_argument(
        "--status",
        choices=("processing", "success", "failed"),
        help="only calls in this state (processing: in flight now)",
    )
    list_calls.add_argument(
        "--format",
        dest="client_format",
        help="only calls made in this client format (openai, aigne, anthropic, responses, gemini)",
    )
    list_calls.add_argument("--limit", type=int, default=20, help="at most this many (20)")
    list_calls.set_defaults(handler=_run(_calls_list))

    instances = commands.add_parser(
        "instances", parents=[common], help="running hub processes"
    ).add_subparsers(title="instances")
    list_instances = instances.add_parser(
        "list", parents=[common], help="hub processes on this database, and their heartbeats"
    )
    list_instances.set_defaults(handler=_run(_instances_list))
    outbox_cli.add_commands(commands, common, _run)
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import logging

    config = server_config(settings, args)
    # With several workers, `server_config` has set up logging already; this adds nothing.
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    served = serve_settings(settings, args)
    asyncio.run(_check_before_serving(served))
    # The socket first: a port in use is said (and exits 1) before the hub starts and
    # announces itself, not after.
    sock = config.bind_socket()
    try:
        if config.workers == 1:
            server = _announcing_server(config, served)
            server.run(sockets=[sock])
            return 0 if server.started else 3  # as `uvicorn.run`: 3 when start-up failed
        logging.getLogger("aigne_hub").info(next_steps(served))
        return _serve_workers(config, sock)
    finally:
        sock.close()


async def _check_before_serving(settings: Settings) -> None:
    """Make or upgrade the database (as `serve` may), and warn of what will fail every
    call: a configured provider with no key anywhere, or no provider at all."""
    import logging

    logger = logging.getLogger("aigne_hub")
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        logger.info("no database at %s yet: making it", path.absolute())
    store = SqlStore(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    await store.open()
    try:
        stored = await providers_with_stored_keys(store)
    finally:
        await store.close()
    for warning in provider_warnings(settings, stored):
        logger.warning(warning)


def _announcing_server(config: uvicorn.Config, settings: Settings) -> uvicorn.Server:
    """A uvicorn server that says where to go next once it is listening."""
    import logging

    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                shown = settings
                if settings.port == 0 and self.servers:  # "any free port": the one it got
                    shown = replace(settings, port=self.servers[0].sockets[0].getsockname()[1])
                logging.getLogger("aigne_hub").info(next_steps(shown))

    return AnnouncingServer(config)


def _serve_workers(config: uvicorn.Config, sock: socket.socket) -> int:
    """Run `config.workers` processes on one socket, each loading the app factory with
    the settings `server_config` put in the environment; the parent restarts any that die."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    return 3 if failed else 0


def serve_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings `serve` runs with: its options over the configuration."""
    trusted = (
        trusted_proxies(args.forwarded_allow_ips, "--forwarded-allow-ips")
        if args.forwarded_allow_ips is not None
        else settings.forwarded_allow_ips
    )
    workers = (
        worker_count(args.workers, "--workers") if args.workers is not None else settings.workers
    )
    return replace(
        settings,
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        forwarded_allow_ips=trusted,
        workers=workers,
    )


def server_config(settings: Settings, args: argparse.Namespace) -> uvicorn.Config:
    """How `serve` runs the hub under uvicorn (options over the configuration). With
    several workers, it also sets the environment the worker processes read."""
    import uvicorn

    from hub.app import HubApp, create_app

    settings = serve_settings(settings, args)
    trusted, workers = settings.forwarded_allow_ips, settings.workers
    check_shared_limits(settings)  # here, once, rather than in each worker
    app: HubApp | str
    if workers == 1:
        app, log_config = create_app(settings), uvicorn.config.LOGGING_CONFIG
    else:
        _share_with_workers(settings, args)
        app, log_config = WORKER_APP, _worker_logging(args.log_level)
    return uvicorn.Config(
        app,
        factory=workers > 1,
        workers=workers,
        log_config=log_config,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        # The hub answers with its own JSON; the server header is noise on every response.
        server_header=False,
        # The hub records every model call itself; a line per request is opt-in.
        access_log=args.access_log,
        # Only a proxy named here may say the visitor used https (which makes the session
        # cookie Secure); nobody is believed by default, and the work is skipped.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=list(trusted) or None,
    )


def _share_with_workers(settings: Settings, args: argparse.Namespace) -> None:
    """Put in the environment what each worker process needs to build the same hub as one
    process would: the configuration file, the options given here, one session secret
    (a random one per process would sign each dashboard session for one worker only), and
    a metrics directory of this server's own, emptied now."""
    import atexit
    import shutil
    import tempfile

    from hub.metrics_shared import clear

    env = os.environ
    if args.config:
        env["AIGNE_HUB_CONFIG"] = os.path.abspath(args.config)
    env["AIGNE_HUB_HOST"] = settings.host
    if settings.port:  # 0 (any free port) is the parent's to choose, once
        env["AIGNE_HUB_PORT"] = str(settings.port)
    env["AIGNE_HUB_SESSION_SECRET"] = settings.session_secret
    env["AIGNE_HUB_WORKERS"] = str(settings.workers)
    if settings.metrics_dir:
        clear(settings.metrics_dir)
        env[METRICS_DIR] = settings.metrics_dir
    else:
        made = env[METRICS_DIR] = tempfile.mkdtemp(prefix="aigne-hub-metrics-")
        atexit.register(shutil.rmtree, made, ignore_errors=True)  # the server's, gone with it


def _worker_logging(level: str) -> dict[str, Any]:
    """uvicorn's logging, and the hub's own lines (calls, start-up) in every worker, as
    one process has them: each worker is a new interpreter that configures only this."""
    import copy

    import uvicorn

    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["hub"] = {"format": LOG_FORMAT}
    config["handlers"]["hub"] = {
        "class": "logging.StreamHandler",
        "formatter": "hub",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["hub"], "level": level.upper()}
    return config


Command = Callable[[Admin, argparse.Namespace], Awaitable[Any]]


def _run(command: Command) -> Callable[[Settings, argparse.Namespace], int]:
    """Open the store, run one command, print its result as a table or JSON."""

    def handler(settings: Settings, args: argparse.Namespace) -> int:
        async def go() -> Any:
            if not args.create:
                await _refuse_a_new_database(settings)
            store = SqlStore(
                settings.database_url,
                sqlite_synchronous=settings.sqlite_synchronous,
                welcome_credits=settings.payments.welcome_credits,
            )
            await store.open()
            try:
                args.settings = settings
                return await command(Admin(store), args)
            finally:
                await store.close()

        result = asyncio.run(go())
        _print(result, args.json)
        return 0

    return handler


async def _refuse_a_new_database(settings: Settings) -> None:
    """Stop a command that would make a new database (a file that is not there yet, or a
    database without the hub's tables) rather than use the hub's: a key made in a second,
    empty database gets 401 from the hub, with nothing to say why."""
    from databases import Database

    from hub.store.migrate import current_version
    from hub.store.raw import dialect_for

    url = settings.database_url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        problem = f"there is no database at {path.absolute()}"
        raise ValueError(_new_database_advice(problem, settings, is_file=True))
    if url.startswith("sqlite") and path is None:
        return  # in memory: new every time, and nobody else's
    database = Database(url) if path is not None else Database(url, min_size=1)
    await database.connect()
    try:
        version = await current_version(database, dialect_for(url.split(":", 1)[0]))
    finally:
        await database.disconnect()
    if version == 0:
        where = path.absolute() if path is not None else _safe_url(url)
        problem = f"the database {where} has no hub tables"
        raise ValueError(_new_database_advice(problem, settings, is_file=path is not None))


def _new_database_advice(problem: str, settings: Settings, *, is_file: bool) -> str:
    if os.environ.get("AIGNE_HUB_DATABASE_URL"):
        where = "from AIGNE_HUB_DATABASE_URL"
        where += "; a relative path is from the current folder" if is_file else ""
        advice = "Point AIGNE_HUB_DATABASE_URL at the hub's database"
    elif settings.config_file is not None:
        where = f"the database of {settings.config_file}"
        where += "; a relative path is from its folder" if is_file else ""
        advice = "Start the hub with this configuration first (`aigne-hub serve` makes it)"
    else:
        where = "the default: no configuration was given by --config or AIGNE_HUB_CONFIG"
        advice = "Give the configuration the hub runs with, so this command uses its database"
    return (
        f"{problem} ({where}). {advice}; a key made in a new database gets 401 from a hub "
        "using another. Or give --create to make a new database there."
    )


async def _db_upgrade(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    from hub.store.migrate import LATEST

    # open() has applied any pending migration already.
    return {"schema_version": LATEST, "database": _safe_url(admin.store.url)}


async def _keys_create(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = bounds.text(args.user, "--user")
    name = bounds.optional_text(args.name, "--name")
    app = bounds.optional_text(args.app, "--app")
    expires = None
    if args.expires_days is not None:
        expires = time.time() + bounds.expires_days(args.expires_days, "--expires-days") * 86400
    if args.admin:
        await admin.ensure_account(user, is_admin=True)
    limits = _limits_given(args)
    models = (
        None if args.models is None else bounds.model_patterns(",".join(args.models), "--models")
    )
    cli_budgets.given(args)  # checked before the key is made
    key_id, secret = await admin.create_key(
        user, name=name, app_did=app, expires_at=expires, limits=limits, models=models
    )
    cap = await cli_budgets.set_new_key_budget(admin, key_id, args)
    if not args.json:
        print("Save this key now: it is shown only once.", file=sys.stderr)
    return {"id": key_id, "key": secret, "user_did": args.user, "models": models, **cap}


def _limit_options(parser: argparse.ArgumentParser) -> None:
    for name, what in (
        ("rpm", "requests per minute"),
        ("tpm", "tokens per minute"),
        ("concurrent", "calls at once"),
    ):
        parser.add_argument(
            f"--{name}", metavar="N", help=f"{what} (0: no limit; 'default': the configured one)"
        )


def _limits_given(args: argparse.Namespace) -> dict[str, int | None]:
    given = {name: getattr(args, name) for name in bounds.LIMIT_FIELDS}
    return bounds.limit_overrides({k: v for k, v in given.items() if v is not None})


async def _keys_limits(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    key_id = bounds.text(args.key_id, "key_id", 40)
    if not await admin.set_key_limits(key_id, _limits_given(args)):
        raise LookupError(f"no key with id {args.key_id}")
    return {"id": key_id, **_limits_given(args)}


async def _account_limits(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = bounds.text(args.user, "--user")
    await admin.set_account_limits(user, _limits_given(args))
    return {"user_did": user, **_limits_given(args)}


async def _keys_list(admin: Admin, args: argparse.Namespace) -> list[dict[str, Any]]:
    return await admin.list_keys(bounds.optional_text(args.user, "--user"))


async def _keys_revoke(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    # The operator is cutting the owner off: their sessions end too (see Admin.revoke_key).
    key_id = bounds.text(args.key_id, "key_id", 40)
    if not await admin.revoke_key(key_id, sign_out_owner=True):
        raise LookupError(f"no live key with id {args.key_id}")
    return {"id": args.key_id, "revoked": True}


async def _credits_grant(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = bounds.text(args.user, "user")
    units = bounds.grant_amount(args.amount)
    balance = await admin.grant(user, units, bounds.optional_text(args.note, "--note", 500))
    return {"user_did": user, "granted": units, "balance": balance}


async def _credits_balance(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = bounds.text(args.user, "user")
    return {"user_did": user, **await admin.ledger(user)}


async def _rates_set(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    # The same entry `PUT /api/admin/rates` takes, checked by the same code.
    call_type = args.type or ("imageGeneration" if args.image is not None else "chatCompletion")
    entry = {
        "model": args.model,
        "type": call_type,
        "per": "million" if args.per_million else "token",
        "input": args.input,
        "output": args.output,
        "cached": args.cached,
        "cache_write": args.cache_write,
        "image": args.image,
    }
    model, call_type, values = admin_input.rate_entry(entry)
    provider = model.partition("/")[0]
    if provider not in args.settings.providers:
        known = ", ".join(args.settings.providers) or "none"
        print(
            f"note: no provider '{provider}' in this configuration (configured: {known}); "
            "the rate applies once the hub serves it.",
            file=sys.stderr,
        )
    await admin.set_rates([(model, call_type, values)])
    return {"model": model, "type": call_type, **values}


async def _rates_remove(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    if not await admin.delete_rate(bounds.text(args.model, "model"), args.type):
        raise LookupError(f"no {args.type} rate for {args.model}")
    return {"model": args.model, "type": args.type, "removed": True}


async def _rates_list(admin: Admin, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "id"} for r in await admin.list_rates()]


async def _credentials_add(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    settings: Settings = args.settings
    # Checked before the key is read, so a wrong provider does not cost a paste.
    admin_input.configured_provider(args.provider, settings.providers)
    # From stdin by default, so the key stays out of the shell history and process list.
    secret = sys.stdin.readline().strip() if args.key == "-" else args.key
    key = admin_input.provider_key(
        args.provider,
        secret,
        args.weight,
        settings.providers,
        key_name="--key",
        weight_name="--weight",
    )
    box = load_box(settings.encryption_key, settings.encryption_key_file, create=True)
    assert box is not None
    added = await admin.add_credential(key, box)
    print("Stored encrypted; running hubs pick it up within 30 s.", file=sys.stderr)
    return added


async def _credentials_list(admin: Admin, args: argparse.Namespace) -> list[dict[str, Any]]:
    return await admin.list_credentials()


async def _credentials_remove(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    if not await admin.remove_credential(bounds.text(args.credential_id, "credential_id", 40)):
        raise LookupError(f"no stored key with id {args.credential_id}")
    return {"id": args.credential_id, "removed": True}


async def _credentials_rotate_key(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    settings: Settings = args.settings
    old = load_box(settings.encryption_key, settings.encryption_key_file)
    if old is None:
        raise ValueError(
            f"no encryption key is configured (looked for {settings.encryption_key_file}): "
            "nothing is stored encrypted yet"
        )
    if settings.encryption_key and not args.new_key_file:
        raise ValueError(
            "the key comes from AIGNE_HUB_ENCRYPTION_KEY or the config: give --new-key-file "
            "for the new one, then point the hubs at it"
        )
    target = Path(args.new_key_file or settings.encryption_key_file)
    new_key = Fernet.generate_key()
    # Readable at every step, whatever fails and whenever a hub reloads: first the file
    # holds the new key and the old (the new one seals, either opens), then every stored
    # key is sealed with the new one, then the old key leaves the file. A run cut short
    # can be run again.
    keys = [new_key, *old.keys]
    write_key_file(target, keys)
    both, new = SecretBox(b"\n".join(keys)), SecretBox(new_key)
    resealed = await admin.reseal_credentials(both, done=new)
    # A key added meanwhile by a process still holding the old key: sealed again too.
    resealed += await admin.reseal_credentials(both, done=new)
    write_key_file(target, [new_key])
    print(
        "Hubs reading this key file follow within 30 s; hubs given the key another way keep "
        "the keys they have and need the new key (this file) and a restart.",
        file=sys.stderr,
    )
    return {"resealed": resealed, "key_file": str(target)}


async def _login_link(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = bounds.text(args.user, "--user")
    minutes = bounds.number(args.minutes, "--minutes", 0, bounds.MAX_LINK_MINUTES)
    if minutes == 0:
        raise ValueError("--minutes must be more than 0")
    settings: Settings = args.settings
    base = public_url(args.url, "--url") if args.url else settings.public_address
    token = await admin.create_login_link(user, minutes)
    return {
        "user_did": user,
        "url": f"{base}/login/link?token={token}",
        "valid_minutes": args.minutes,
    }


async def _sign_out(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    user = bounds.text(args.user, "--user")
    if not await admin.sign_out(user):
        raise LookupError(f"no account {user}")
    return {"user_did": user, "signed_out": True}


async def _calls_list(admin: Admin, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = await admin.list_calls(
        user_did=bounds.optional_text(args.user, "--user"),
        model=bounds.optional_text(args.model, "--model"),
        status=args.status,
        client_format=bounds.optional_text(args.client_format, "--format"),
        limit=bounds.whole(args.limit, "--limit", 1, MAX_CALLS_LISTED),
    )
    if args.json:
        return rows
    shown = (
        "request_at",
        "id",
        "user_did",
        "model",
        "type",
        "client_format",
        "status",
        "stream",
        "input_tokens",
        "output_tokens",
        "credits",
        "usage_estimated",
        "duration_ms",
        "error_code",
    )
    return [{k: row[k] for k in shown} for row in rows]


async def _instances_list(admin: Admin, args: argparse.Namespace) -> list[dict[str, Any]]:
    from hub.store.instances import Instances

    timeout = args.settings.limits.instance_timeout
    return await Instances(admin.store, timeout=timeout).listing()


def _safe_url(url: str) -> str:
    """The database URL without its password."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"


def _shown(key: str, value: Any, as_json: bool) -> Any:
    if value is None:
        return None if as_json else "-"
    if key in MONEY_COLUMNS and isinstance(value, int):
        return credits_text(value)
    if key in TIME_COLUMNS and isinstance(value, int | float):
        stamp = datetime.fromtimestamp(value).astimezone()
        return (
            stamp.isoformat(timespec="seconds")
            if as_json
            else stamp.strftime("%Y-%m-%d %H:%M:%S %Z")
        )
    if isinstance(value, bool) and not as_json:
        return "yes" if value else "no"
    if isinstance(value, list) and not as_json:  # a key's model patterns
        return ",".join(map(str, value))
    return value


def _print(result: Any, as_json: bool) -> None:
    rows = result if isinstance(result, list) else [result]
    shown = [{k: _shown(k, v, as_json) for k, v in row.items()} for row in rows]
    if as_json:
        print(json.dumps(shown if isinstance(result, list) else shown[0], indent=2, default=str))
        return
    if not shown:
        print("(none)")
        return
    if not isinstance(result, list):
        width = max(len(k) for k in shown[0])
        for key, value in shown[0].items():
            print(f"{key.ljust(width)}  {value}")
        return
    columns = list(shown[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in shown)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in shown:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
