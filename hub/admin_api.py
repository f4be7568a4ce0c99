"""Managing the hub over HTTP: accounts, keys, grants, rates and stored provider keys for
admins (`/api/admin/...`), and a user's own keys (`/api/user/keys`).

Bodies are JSON. A state-changing request made with a session cookie (not a key) must say
`content-type: application/json` (the auth middleware checks): a cross-site form cannot.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub import admin_input, bounds
from hub.bodies import json_list, json_object
from hub.json_route import JsonRoute
from hub.provider_health import provider_report
from hub.providers.registry import ProviderRegistry
from hub.secrets import load_box
from hub.settings import Settings
from hub.store.admin import CALL_TYPES, Admin
from hub.store.budget_admin import Budgets
from hub.usage_api import admin_only, identity_of, ledger_page, shown
from middleware.errors import HubError


def routes(admin: Admin, registry: ProviderRegistry, settings: Settings) -> list[JsonRoute]:
    async def accounts(request: Request) -> Response:
        return JSONResponse([shown(a) for a in await admin.list_accounts()])

    async def all_keys(request: Request) -> Response:
        if request.method == "POST":
            body = await json_object(request)
            user = bounds.text(body.get("user"), "user")
            make_admin = body.get("admin", False)
            if not isinstance(make_admin, bool):
                raise HubError(400, "invalid_field", "'admin' must be true or false.", "admin")
            if make_admin:  # as `aigne-hub keys create --admin`: the owner becomes an admin
                await admin.ensure_account(user, is_admin=True)
            # Rate limits are the operator's to set (`rpm`, `tpm`, `concurrent`).
            return await _create_key(admin, user, body, bounds.limit_overrides(body))
        listed = await admin.list_keys(request.query_params.get("user"))
        return JSONResponse([shown(k) for k in listed])

    async def my_keys(request: Request) -> Response:
        user = identity_of(request).user_did
        if request.method == "POST":
            return await _create_key(admin, user, await json_object(request))
        return JSONResponse([shown(k) for k in await admin.list_keys(user)])

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

    async def key_limits(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        limits = bounds.limit_overrides(await json_object(request))
        if not await admin.set_key_limits(key_id, limits):
            raise HubError(404, "not_found", f"No key with id {key_id}.")
        return JSONResponse({"id": key_id, **limits})

    async def account_limits(request: Request) -> Response:
        did = bounds.text(request.path_params["did"], "did")
        limits = bounds.limit_overrides(await json_object(request))
        await admin.set_account_limits(did, limits)
        return JSONResponse({"user_did": did, **limits})

    async def sign_out(request: Request) -> Response:
        did = request.path_params["did"]
        if not await admin.sign_out(did):
            raise HubError(404, "not_found", f"No account {did}.")
        return JSONResponse({"user_did": did, "signed_out": True})

    async def grants(request: Request) -> Response:
        if request.method != "POST":  # GET, or HEAD (which Starlette adds to GET)
            return await ledger_page(request, admin.list_grants, request.query_params.get("user"))
        body = await json_object(request)
        user = bounds.text(body.get("user"), "user")
        units = bounds.grant_amount(body.get("amount"))
        note = bounds.optional_text(body.get("note"), "note", 500)
        balance = await admin.grant(user, units, note)
        return JSONResponse(shown({"user_did": user, "granted": units, "balance": balance}))

    async def rates(request: Request) -> Response:
        if request.method == "DELETE":
            model = request.query_params.get("model", "")
            call_type = request.query_params.get("type", "chatCompletion")
            if call_type not in CALL_TYPES or not await admin.delete_rate(model, call_type):
                raise HubError(404, "not_found", f"No {call_type} rate for '{model}'.")
            return JSONResponse({"model": model, "type": call_type, "removed": True})
        if request.method == "PUT":
            entries = await json_list(request)
            # All or none: every entry is checked, then all are written in one transaction.
            await admin.set_rates(admin_input.rate_entries(entries))
        return JSONResponse([shown(r) for r in await admin.list_rates()])

    async def credentials(request: Request) -> Response:
        if request.method == "POST":
            body = await json_object(request)
            key = admin_input.provider_key(
                body.get("provider"), body.get("key"), body.get("weight", 100), settings.providers
            )
            box = load_box(settings.encryption_key, settings.encryption_key_file, create=True)
            assert box is not None
            added = await admin.add_credential(key, box)
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
        ("/api/admin/accounts/{did}/limits", account_limits, ["PUT"]),
        ("/api/admin/keys", all_keys, ["GET", "POST"]),
        ("/api/admin/keys/{key_id}", revoke, ["DELETE"]),
        ("/api/admin/keys/{key_id}/limits", key_limits, ["PUT"]),
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


async def _create_key(
    admin: Admin, user: str, body: dict[str, Any], limits: dict[str, int | None] | None = None
) -> Response:
    expires_at = None
    if body.get("expires_days") is not None:
        expires_at = time.time() + bounds.expires_days(body["expires_days"]) * 86400
    # Admins and users alike: a key limited to some models only narrows what its owner can do.
    models = bounds.model_patterns(body.get("models"))
    # A cap on a new key only narrows what its owner can spend: users may set one too.
    cap = bounds.budget(body)
    key_id, secret = await admin.create_key(
        user,
        name=bounds.optional_text(body.get("name"), "name"),
        app_did=bounds.optional_text(body.get("app"), "app"),
        expires_at=expires_at,
        limits=limits,
        models=models,
    )
    if cap is not None:
        await Budgets(admin.store).set_key_budget(key_id, *cap)
    budget, period = cap or (None, None)
    # The only time the secret is shown: it is stored as a hash.
    created = {"id": key_id, "key": secret, "user_did": user, "models": models}
    return JSONResponse(shown({**created, "budget": budget, "period": period}), status_code=201)
