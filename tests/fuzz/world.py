"""The hub the fuzz test attacks: accounts with credits and rates, an admin and a user with
keys and sessions, an upstream that always answers; and the checks of what it answered."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from starlette.routing import Mount, Route

from hub.app import HubApp, create_app
from hub.routes import MODEL_ROUTES, build_router
from hub.store.admin import Admin
from hub.store.schema import accounts, credit_grants, meter_events, model_calls
from middleware.auth import SESSION_COOKIE, hash_key, session_signer, session_value
from middleware.money import to_units
from tests.conftest import make_settings
from tests.fuzz import asgi, upstream
from tests.fuzz.hostile import PRICED

ADMIN = "did:abt:fuzz-admin"
USER = "did:abt:fuzz-user"
VICTIM = "did:abt:bob"
# The pages answer a person's browser: their errors may be a page (the sign-in form saying
# the key was wrong, "Admins only"); every other route's errors are the JSON shape.
PAGES = ("/", "/dashboard", "/playground", "/login", "/logout")
ERROR_FIELDS = {"message", "type", "code", "param"}


def every_route(app: HubApp) -> list[tuple[str, frozenset[str]]]:
    """Each route of the hub's router and the model routes, with the methods they take; a
    mount as `{path}` below it; and `{unknown}` for paths no route has."""
    router = build_router(app.store, app.registry, app.settings, app.metrics)
    found: list[tuple[str, frozenset[str]]] = []
    for route in router.routes:
        if isinstance(route, Route):
            found.append((route.path, frozenset(route.methods or ())))
        elif isinstance(route, Mount):
            found.append((route.path + "/{path}", frozenset({"GET", "HEAD"})))
        else:
            raise AssertionError(f"the fuzz test does not know how to reach {route!r}")
    found += [(path, frozenset({"POST"})) for path in MODEL_ROUTES]
    return [*found, ("{unknown}", frozenset())]


@dataclass
class World:
    app: HubApp
    keys: dict[str, str]  # caller → API key
    ids: list[str]  # key ids the fuzzer may revoke (not its own callers')
    signer: Any
    link_tokens: list[str]  # one-time sign-in links, for /login/link to spend
    key_hashes: dict[str, str | None] = field(default_factory=dict)

    @property
    def login_keys(self) -> list[str]:
        return [*self.keys.values(), "ahk_not-a-key", ""]

    @classmethod
    async def start(cls, db_url: str) -> World:
        settings = make_settings(db_url, cors_origins=("https://app.example",))
        app = create_app(settings, transport=upstream.provider())
        await app.startup()
        admin = Admin(app.store)
        await admin.ensure_account(ADMIN, is_admin=True)
        _, admin_key = await admin.create_key(ADMIN, name="fuzz admin")
        _, user_key = await admin.create_key(USER, name="fuzz user")
        victims = [(await admin.create_key(VICTIM, name=f"victim {i}"))[0] for i in range(3)]
        for did, credits in ((ADMIN, 1000), (USER, 10), (VICTIM, 1)):
            await admin.grant(did, to_units(credits), "fuzz")
        chat, embedding, image = PRICED
        await admin.set_rate(chat, "chatCompletion", input_rate=10_000, output_rate=20_000)
        await admin.set_rate(embedding, "embedding", input_rate=1_000, output_rate=0)
        await admin.set_rate(
            image, "imageGeneration", input_rate=0, output_rate=0, image_rate=to_units("0.04")
        )
        world = cls(
            app=app,
            keys={"admin": admin_key, "user": user_key},
            ids=victims,
            signer=session_signer(settings.session_secret or ""),
            link_tokens=[await admin.create_login_link(did) for did in (ADMIN, USER) * 3],
        )
        # The admin's session from a one-time link, the user's from a key.
        world.key_hashes = {ADMIN: None, USER: hash_key(user_key)}
        return world

    async def send(self, request: asgi.Request) -> asgi.Answer:
        auth = request.auth
        extra: list[tuple[bytes, bytes]] = []
        if auth in self.keys:
            extra.append((b"authorization", f"Bearer {self.keys[auth]}".encode()))
        elif auth == "garbage":
            extra.append((b"authorization", b"Bearer ahk_garbage"))
        elif auth.endswith("-cookie"):
            did = ADMIN if auth == "admin-cookie" else USER
            found = await self.app.store.find_account(did)  # signing out moves the epoch on
            epoch = found.session_epoch if found is not None else 0
            cookie = session_value(self.signer, did, self.key_hashes[did], epoch)
            extra.append((b"cookie", f"{SESSION_COOKIE}={cookie}".encode()))
        with_auth = asgi.Request(**{**request.__dict__, "headers": (*extra, *request.headers)})
        return await asgi.send(self.app, with_auth)

    async def reload_stored_keys(self) -> str | None:
        """What the hub does every 30 s, done here every few requests so that a provider key
        added through the API is used within the run; why it failed, if it did."""
        try:
            await self.app.load_stored_keys()
        except Exception as exc:
            return f"reloading stored provider keys: {type(exc).__name__}: {exc}"[:200]
        return None

    async def ledger_faults(self) -> list[str]:
        """Accounts whose balance is not their grants less their charges, and calls never
        settled, summed here in Python (exact, where SQL sums can overflow)."""
        store = self.app.store
        balances = await store.query(select(accounts.c.id, accounts.c.did, accounts.c.balance))
        grants = await store.query(select(credit_grants.c.account_id, credit_grants.c.amount))
        charges = await store.query(select(meter_events.c.account_id, meter_events.c.amount))
        faults = []
        for account in balances:
            granted = sum(int(g["amount"]) for g in grants if g["account_id"] == account["id"])
            charged = sum(int(m["amount"]) for m in charges if m["account_id"] == account["id"])
            balance = account["balance"]
            if not isinstance(balance, int) or balance != granted - charged:
                faults.append(
                    f"account {account['did']!r}: balance {balance!r} but granted {granted}"
                    f" - charged {charged} = {granted - charged}"
                )
        stuck = await store.query(
            select(model_calls.c.id, model_calls.c.model).where(
                model_calls.c.status == "processing"
            )
        )
        if stuck:
            models = sorted({str(c["model"]) for c in stuck})
            faults.append(f"{len(stuck)} calls left processing, never billed (models {models})")
        return faults

    async def stop(self) -> None:
        await self.app.shutdown()


def unreached(
    routes: list[tuple[str, frozenset[str]]], answers: Mapping[tuple[str, int], int]
) -> list[str]:
    """Routes whose handler no request got past the key check to, and model routes never
    answered with success: a run that only collects 401s would prove nothing."""
    missed = []
    for route, _ in routes:
        statuses = {status for (r, status), n in answers.items() if r == route and n}
        if not statuses - {401, 403, 405}:
            missed.append(f"the fuzz never reached {route}'s handler: {sorted(statuses)}")
        elif route in MODEL_ROUTES and not any(200 <= s < 300 for s in statuses):
            missed.append(f"no call to {route} succeeded: {sorted(statuses)}")
    return missed


def faults_of(
    request: asgi.Request, answer: asgi.Answer, records: list[logging.LogRecord]
) -> list[str]:
    """What is wrong with an answer, each as a class of fault (the same class for the same
    fault on the same route, whatever the input)."""
    where = f"{request.method} {request.route}"
    problems = [f"{type(answer.raised).__name__} escaped"] if answer.raised else []
    problems += [
        f"logged {r.levelname} by {r.name}: "
        # The exception, else the message's format (its arguments, such as ids, vary).
        + (r.exc_info[0].__name__ if r.exc_info and r.exc_info[0] else _shape(r))
        for r in records
        if r.exc_info or r.stack_info or r.levelno >= logging.ERROR
    ]
    faults = []
    if answer.status >= 500:
        faults.append(f"{where}: {answer.status} ({'; '.join(problems) or 'nothing logged'})")
    elif problems:
        faults.append(f"{where}: {answer.status} but {'; '.join(problems)}")
    if answer.status >= 400 and not answer.raised and not _is_json_error(request, answer):
        kind = answer.headers.get("content-type", "no content-type")
        faults.append(f"{where}: {answer.status} error as {kind}, not the JSON error shape")
    return faults


def _is_json_error(request: asgi.Request, answer: asgi.Answer) -> bool:
    content_type = answer.headers.get("content-type", "")
    if _is_page(request) and content_type.startswith("text/html"):
        return True
    if not content_type.startswith("application/json"):
        return False
    if request.method == "HEAD":
        return True  # no body to check
    try:
        error = json.loads(answer.body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    if request.route.startswith("/v1beta/"):
        return _is_google_error(error, answer.status)
    return (
        isinstance(error, dict)
        and set(error) == ERROR_FIELDS
        and all(isinstance(error[k], str) for k in ("message", "type", "code"))
        and isinstance(error["param"], str | None)
    )


def _is_google_error(error: Any, status: int) -> bool:
    """Gemini's routes answer in Google's shape: the HTTP status as `code`, an rpc status
    name, and the hub's code as the ErrorInfo reason."""
    return (
        isinstance(error, dict)
        and error.get("code") == status
        and isinstance(error.get("message"), str)
        and isinstance(error.get("status"), str)
        and isinstance(error.get("details"), list)
        and isinstance(error["details"][0].get("reason"), str)
    )


def _is_page(request: asgi.Request) -> bool:
    return any(request.route == p or request.route.startswith(p + "/") for p in PAGES)


def _shape(record: logging.LogRecord) -> str:
    """A log message without its arguments (ids, counts), so that one fault is one class."""
    return re.sub(r"%[-0-9.]*[sdrf]", "…", str(record.msg))[:80]
