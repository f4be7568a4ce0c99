"""Managing the hub over HTTP: accounts, keys, grants, rates and stored provider keys for
admins (`/api/admin/...`), and a user's own keys (`/api/user/keys`).

Bodies are JSON. A state-changing request made with a session cookie (not a key) must say
`content-type: application/json` (the auth middleware checks): a cross-site form cannot.
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub.bodies import json_list, json_object
from hub.json_route import JsonRoute
from hub.provider_health import provider_report
from hub.providers.registry import ProviderRegistry
from hub.secrets import load_box
from hub.settings import Settings
from hub.store.admin import CALL_TYPES, Admin
from hub.usage_api import admin_only, identity_of, ledger_page, shown
from middleware.errors import HubError
from middleware.money import to_units

MAX_KEY_DAYS = 36_500  # a hundred years: later dates do not fit a calendar


def routes(admin: Admin, registry: ProviderRegistry, settings: Settings) -> list[JsonRoute]:
    async def accounts(request: Request) -> Response:
        return JSONResponse([shown(a) for a in await admin.list_accounts()])

    async def all_keys(request: Request) -> Response:
        if request.method == "POST":
            body = await json_object(request)
            user = _text(body, "user")
            make_admin = body.get("admin", False)
            if not isinstance(make_admin, bool):
                raise HubError(400, "invalid_field", "'admin' must be true or false.", "admin")
            if make_admin:  # as `aigne-hub keys create --admin`: the owner becomes an admin
                await admin.ensure_account(user, is_admin=True)
            return await _create_key(admin, user, body)
        return JSONResponse(await admin.list_keys(request.query_params.get("user")))

    async def my_keys(request: Request) -> Response:
        user = identity_of(request).user_did
        if request.method == "POST":
            return await _create_key(admin, user, await json_object(request))
        return JSONResponse(await admin.list_keys(user))

    async def revoke(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        caller = identity_of(request)
        owner = await admin.key_owner(key_id)
        # A user may revoke only their own keys; to them, others' keys do not exist.
        if owner is None or (not caller.is_admin and owner != caller.user_did):
            raise HubError(404, "not_found", f"No key with id {key_id}.")
        # An admin revoking someone's key is cutting them off: every session of theirs ends
        # too (one opened by a one-time link included). Revoking one's own key ends only the
        # sessions opened with it; signing out ends the rest.
        revoked = await admin.revoke_key(key_id, sign_out_owner=owner != caller.user_did)
        return JSONResponse({"id": key_id, "revoked": True, "was_live": revoked})

    async def sign_out(request: Request) -> Response:
        did = request.path_params["did"]
        if not await admin.sign_out(did):
            raise HubError(404, "not_found", f"No account {did}.")
        return JSONResponse({"user_did": did, "signed_out": True})

    async def grants(request: Request) -> Response:
        if request.method != "POST":  # GET, or HEAD (which Starlette adds to GET)
            return await ledger_page(request, admin.list_grants, request.query_params.get("user"))
        body = await json_object(request)
        units = _credits(body, "amount")
        if units == 0:
            raise HubError(400, "invalid_field", "'amount' must not be zero.", "amount")
        note = _optional_text(body, "note")
        balance = await admin.grant(_text(body, "user"), units, note)
        return JSONResponse(shown({"user_did": body["user"], "granted": units, "balance": balance}))

    async def rates(request: Request) -> Response:
        if request.method == "DELETE":
            model = request.query_params.get("model", "")
            call_type = request.query_params.get("type", "chatCompletion")
            if call_type not in CALL_TYPES or not await admin.delete_rate(model, call_type):
                raise HubError(404, "not_found", f"No {call_type} rate for '{model}'.")
            return JSONResponse({"model": model, "type": call_type, "removed": True})
        if request.method == "PUT":
            entries = await json_list(request)
            parsed = [_rate(entry, i) for i, entry in enumerate(entries)]  # all, or none
            for model, call_type, values in parsed:
                await admin.set_rate(model, call_type, **values)
        return JSONResponse([shown(r) for r in await admin.list_rates()])

    async def credentials(request: Request) -> Response:
        if request.method == "POST":
            body = await json_object(request)
            provider = _text(body, "provider")
            if provider not in settings.providers:
                raise HubError(404, "not_found", f"No provider '{provider}' is configured.")
            box = load_box(settings.encryption_key, settings.encryption_key_file, create=True)
            assert box is not None
            weight = body.get("weight", 100)
            if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
                raise HubError(
                    400, "invalid_field", "'weight' must be a positive integer.", "weight"
                )
            added = await admin.add_credential(provider, _text(body, "key", 1000), box, weight)
            return JSONResponse(added, status_code=201)
        return JSONResponse(await admin.list_credentials())

    async def providers(request: Request) -> Response:
        return JSONResponse(await provider_report(registry, settings, admin.store))

    async def remove_credential(request: Request) -> Response:
        credential_id = request.path_params["credential_id"]
        if not await admin.remove_credential(credential_id):
            raise HubError(404, "not_found", f"No stored key with id {credential_id}.")
        return JSONResponse({"id": credential_id, "removed": True})

    guarded = [
        ("/api/admin/accounts", accounts, ["GET"]),
        ("/api/admin/accounts/{did}/sign-out", sign_out, ["POST"]),
        ("/api/admin/keys", all_keys, ["GET", "POST"]),
        ("/api/admin/keys/{key_id}", revoke, ["DELETE"]),
        ("/api/admin/grants", grants, ["GET", "POST"]),
        ("/api/admin/rates", rates, ["GET", "PUT", "DELETE"]),
        ("/api/admin/providers", providers, ["GET"]),
        ("/api/admin/credentials", credentials, ["GET", "POST"]),
        ("/api/admin/credentials/{credential_id}", remove_credential, ["DELETE"]),
    ]
    return [
        *(
            JsonRoute(path, _endpoint(handler, admins_only=True), methods=methods)
            for path, handler, methods in guarded
        ),
        JsonRoute("/api/user/keys", _endpoint(my_keys), methods=["GET", "POST"]),
        JsonRoute("/api/user/keys/{key_id}", _endpoint(revoke), methods=["DELETE"]),
    ]


def _endpoint(handler: Any, admins_only: bool = False) -> Any:
    async def endpoint(request: Request) -> Response:
        if admins_only and (refused := admin_only(request)) is not None:
            return refused
        # A HubError (also these, as one) is answered by JsonRoute, as on every route.
        try:
            response: Response = await handler(request)
            return response
        except LookupError as exc:
            raise HubError(404, "not_found", str(exc)) from exc
        except ValueError as exc:
            raise HubError(400, "invalid_request", str(exc)) from exc

    return endpoint


def _text(body: Any, name: str, longest: int = 200) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise HubError(400, "missing_field", f"The field '{name}' is required.", name)
    return _fits(value, name, longest)


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise HubError(400, "invalid_field", f"'{name}' must be text.", name)
    return _fits(value, name)


def _fits(value: str, name: str, longest: int = 200) -> str:
    """Text the store can hold: no longer than its column, and no NUL."""
    if len(value) > longest or "\x00" in value:
        raise HubError(
            400, "invalid_field", f"'{name}' must be text of at most {longest} characters.", name
        )
    return value


def _credits(body: dict[str, Any], name: str, divisor: int = 1) -> int:
    value = body.get(name)
    try:
        return to_units(Decimal(str(value)) / divisor)
    except (InvalidOperation, ValueError) as exc:
        raise HubError(
            400,
            "invalid_field",
            f"'{name}' must be a number of credits with at most 10 decimals.",
            name,
        ) from exc


async def _create_key(admin: Admin, user: str, body: dict[str, Any]) -> Response:
    days = body.get("expires_days")
    if days is not None and (
        not isinstance(days, int | float)
        or isinstance(days, bool)
        or not 0 < days <= MAX_KEY_DAYS  # also refuses NaN and infinity
    ):
        raise HubError(
            400,
            "invalid_field",
            f"'expires_days' must be a number of days from 1 to {MAX_KEY_DAYS}.",
            "expires_days",
        )
    key_id, secret = await admin.create_key(
        user,
        name=_optional_text(body, "name"),
        app_did=_optional_text(body, "app"),
        expires_at=time.time() + days * 86400 if days else None,
    )
    # The only time the secret is shown: it is stored as a hash.
    return JSONResponse({"id": key_id, "key": secret, "user_did": user}, status_code=201)


def _rate(entry: Any, index: int) -> tuple[str, Any, dict[str, Any]]:
    if not isinstance(entry, dict):
        raise HubError(400, "invalid_request", f"Rate {index} is not an object.")
    call_type = entry.get("type", "chatCompletion")
    if call_type not in CALL_TYPES:
        raise HubError(400, "invalid_field", f"Rate {index}: unknown type {call_type!r}.", "type")

    per = entry.get("per", "token")
    if per not in ("token", "million"):
        raise HubError(400, "invalid_field", f"Rate {index}: 'per' is token or million.", "per")

    def units(name: str, required: bool) -> int | None:
        if entry.get(name) is None:
            if required:
                raise HubError(400, "missing_field", f"Rate {index}: '{name}' is required.", name)
            return None
        # Prices are quoted per million tokens; divided exactly (a per-image price never is).
        divisor = 1_000_000 if per == "million" and name != "image" else 1
        value = _credits(entry, name, divisor)
        if value < 0:
            raise HubError(400, "invalid_field", f"Rate {index}: '{name}' is negative.", name)
        return value

    values = {
        "input_rate": units("input", True) or 0,
        "output_rate": units("output", call_type == "chatCompletion") or 0,
        "cached_rate": units("cached", False),
        "cache_write_rate": units("cache_write", False),
        "image_rate": units("image", call_type == "imageGeneration"),
    }
    return _text(entry, "model"), call_type, values
