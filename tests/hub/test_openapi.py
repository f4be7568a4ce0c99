"""The API description: served without a key, valid OpenAPI 3.1, listing exactly the JSON
API routes the hub serves, and fuzzed with schemathesis (no 5xx, every error in the hub's
one shape)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks

from hub.app import create_app
from hub.openapi import OPERATIONS
from hub.payments.settings import PaymentSettings
from hub.routes import build_router
from hub.settings import Settings
from tests.conftest import USER, Hub, make_settings, start_hub

API_PREFIXES = ("/api/admin/", "/api/user/", "/api/payments/")


def served_operations(hub: Hub) -> set[tuple[str, str]]:
    """(method, path) of every route the hub's router serves under the JSON APIs; HEAD is
    Starlette's addition to every GET."""
    app = hub.app
    router = build_router(app.store, app.registry, app.settings, app.metrics)
    served = set()
    for route in router.routes:
        path = getattr(route, "path", "")
        if path.startswith(API_PREFIXES):
            served |= {(m, path) for m in getattr(route, "methods", None) or () if m != "HEAD"}
    return served


def structural_faults(doc: dict[str, Any]) -> list[str]:
    """What makes the document not a usable OpenAPI 3.1 one: the parts a client generator
    relies on (openapi-spec-validator is not a dependency; schemathesis parses the rest)."""
    faults = []
    if doc.get("openapi") != "3.1.0" or not {"title", "version"} <= set(doc.get("info", {})):
        faults.append("openapi 3.1.0 with info.title and info.version")
    components = doc["components"]
    ids = []
    for path, item in doc["paths"].items():
        templated = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            ids.append(op["operationId"])
            in_path = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            if in_path != templated:
                faults.append(f"{where}: path parameters {in_path} != {templated}")
            if not op["responses"] or not any(s.startswith("2") for s in op["responses"]):
                faults.append(f"{where}: no success response")
            for scheme in (name for need in op["security"] for name in need):
                if scheme not in components["securitySchemes"]:
                    faults.append(f"{where}: unknown security scheme {scheme}")
    for target in re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', json.dumps(doc)):
        if target[1] not in components.get(target[0], {}):
            faults.append(f"dangling $ref {target}")
    if len(ids) != len(set(ids)):
        faults.append("operationIds are not unique")
    return faults


def described_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item}


async def fetch_document(hub: Hub) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=hub.app), base_url="http://hub.test"
    ) as anonymous:
        return await anonymous.get("/openapi.json")


@pytest.mark.anyio
async def test_the_document_is_served_without_a_key_and_is_valid_openapi(hub: Hub) -> None:
    response = await fetch_document(hub)

    assert response.status_code == 200, response.text
    assert structural_faults(response.json()) == []


@pytest.mark.anyio
async def test_the_document_lists_exactly_the_routes_served(hub: Hub) -> None:
    doc = (await fetch_document(hub)).json()

    served = served_operations(hub)
    described = described_operations(doc)

    assert served, "no JSON API routes found: the prefixes changed?"
    assert served - described == set(), "served but not described"
    assert described - served == set(), "described but not served"


# -- fuzzing with schemathesis ----------------------------------------------------------

# A few cases per operation, the same ones every run: enough to reach each handler's
# checks with odd input, bounded so the whole run stays well under a minute.
FUZZ = hypothesis.settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
CONFORMANCE = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
ERROR_FIELDS = {"message", "type", "code", "param"}


def prepared_hub(tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """Settings for a hub on SQLite with both payment webhooks on, and the headers of an
    admin, a user who is not one, and an anonymous caller, made by a hub run once before
    (schemathesis runs the fuzzed app in an event loop of its own)."""
    settings = make_settings(
        f"sqlite:///{tmp_path / 'hub.db'}",
        payments=PaymentSettings(
            stripe_webhook_secret="whsec_fuzz",
            topup_webhook_secret="whsec_" + base64.b64encode(b"fuzz-secret-0123").decode(),
        ),
    )

    async def callers() -> dict[str, str]:
        hub = await start_hub(settings, httpx.MockTransport(_no_upstream))
        await hub.admin.ensure_account(USER, is_admin=True)
        _, user_key = await hub.admin.create_key("did:abt:bob", name="not an admin")
        await hub.client.aclose()
        await hub.app.shutdown()
        return {"admin": hub.key, "user": user_key}

    keys = asyncio.run(callers())
    return settings, {
        "admin": {"authorization": f"Bearer {keys['admin']}"},
        "user": {"authorization": f"Bearer {keys['user']}"},
        "anonymous": {},
    }


def _no_upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": {"message": "no upstream in this test"}})


def hub_error_shape(response: Any) -> str | None:
    """What is wrong with an error answer, measured against the hub's one shape."""
    if not response.headers.get("content-type", [""])[0].startswith("application/json"):
        return f"not JSON: {response.headers.get('content-type')}"
    try:
        body = response.json()
    except ValueError:
        return "a body that is not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != ERROR_FIELDS or set(body) != {"error"}:
        return f"not the hub's error shape: {body!r}"[:300]
    if not all(isinstance(error[k], str) for k in ("message", "type", "code")):
        return f"message, type and code must be text: {error!r}"[:300]
    if error["param"] is not None and not isinstance(error["param"], str):
        return f"param must be text or null: {error!r}"[:300]
    return None


def fuzz(operation: Any, caller: str, headers: dict[str, str]) -> list[str]:
    """What went wrong in a few generated calls of one operation, as one caller."""
    failures: list[str] = []

    @FUZZ
    @hypothesis.given(case=operation.as_strategy())
    def calls(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        where = f"{caller}: {case.method} {case.formatted_path} -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.text[:300]}")
        elif response.status_code >= 400 and (wrong := hub_error_shape(response)):
            failures.append(f"{where}: {wrong}")
        try:  # the status, media type and body as the document describes them
            case.validate_response(response, checks=CONFORMANCE)
        except FailureGroup as exc:  # each check that failed
            failures.append(f"{where}: {exc}"[:600])

    calls()
    return failures


def test_schemathesis_finds_no_server_error_and_every_error_in_the_hubs_shape(
    tmp_path: Path,
) -> None:
    settings, callers = prepared_hub(tmp_path)
    app = create_app(settings, transport=httpx.MockTransport(_no_upstream))
    failures: list[str] = []
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        for (caller, headers), operation in itertools.product(callers.items(), operations):
            failures += fuzz(operation, caller, headers)
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan, which schemathesis started

    assert len(operations) == len(OPERATIONS)
    assert failures == []
