"""The pieces an operation's description is made of: one small declarative `Operation` per
route, and the JSON Schema helpers they use. The modules beside this one list the
operations, one per route the hub serves; hub.openapi.document assembles them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Schema = dict[str, Any]
# Who may call: an API key or a session (the default), or a payment service's signature.
Security = Literal["caller", "stripe", "standard_webhook"]

# Statuses the hub answers with its one error shape, and why, for every operation that can.
ERROR_REASONS = {
    400: "Bad input: the field at fault is named in `error.param`.",
    401: "No valid API key or session (or, on a webhook, a bad signature is a 400).",
    403: "Not allowed: an admin route called by a non-admin, or a cap it may not widen.",
    404: "No such object (to a user, others' keys do not exist).",
    405: "Not a method this route takes (the `allow` header lists those it does).",
    413: "The body is larger than the hub reads.",
}


def string(description: str = "", **more: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **more}


def nullable(schema: Schema) -> Schema:
    """The schema, or null (OpenAPI 3.1 is JSON Schema: a list of types)."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(
    properties: dict[str, Schema], required: tuple[str, ...] = (), *, closed: bool = False
) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# Money leaves the hub as exact decimal text, never a float; it is accepted as text or a number.
CREDITS_OUT = string("Credits as exact decimal text (never a float).", examples=["2.5"])
CREDITS_IN: Schema = {
    "anyOf": [{"type": "string", "maxLength": 60}, {"type": "number"}],
    "description": "Credits, as decimal text (exact) or a number; at most 10 decimals.",
}
# A rate limit: a whole number (0: no limit), or null / "default" for the configured default.
LIMIT_IN: Schema = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "enum": ["default"]},
        {"type": "null"},
    ]
}
ANY_OBJECT: Schema = {"type": "object"}


@dataclass(frozen=True)
class Param:
    """A query parameter (path parameters are read from the path itself)."""

    name: str
    description: str
    schema: Schema = field(default_factory=lambda: string())


@dataclass(frozen=True)
class Operation:
    """One route and method: what it takes and what it answers."""

    method: str
    path: str
    summary: str
    tag: str
    response: Schema = field(default_factory=lambda: dict(ANY_OBJECT))
    status: int = 200
    body: Schema | None = None
    query: tuple[Param, ...] = ()
    # Error statuses beyond those every operation may answer (401, 405).
    errors: tuple[int, ...] = ()
    security: Security = "caller"
    description: str = ""
    # Other media types the success answer may be in (the calls listing's CSV export).
    also: tuple[str, ...] = ()

    def path_params(self) -> list[str]:
        """`/api/admin/keys/{key_id}` -> ["key_id"] (a `:path` converter dropped)."""
        return [name.split(":")[0] for name in re.findall(r"{([^}]+)}", self.path)]

    def described(self) -> dict[str, Any]:
        """This operation as an OpenAPI Operation Object."""
        op_id = re.sub(r"[^A-Za-z0-9]+", "_", f"{self.method} {self.path}").strip("_").lower()
        described: dict[str, Any] = {
            "operationId": op_id,
            "summary": self.summary,
            "tags": [self.tag],
            "parameters": [*self._path_parameters(), *self._query_parameters()],
            "responses": self._responses(),
        }
        if self.description:
            described["description"] = self.description
        if self.body is not None:
            described["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.body}},
            }
        described["security"] = {
            "caller": [{"apiKey": []}, {"session": []}],
            "stripe": [{"stripeSignature": []}],
            "standard_webhook": [{"webhookSignature": []}],
        }[self.security]
        return described

    def _path_parameters(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "in": "path", "required": True, "schema": string(minLength=1)}
            for name in self.path_params()
        ]

    def _query_parameters(self) -> list[dict[str, Any]]:
        return [
            {"name": p.name, "in": "query", "description": p.description, "schema": p.schema}
            for p in self.query
        ]

    def _responses(self) -> dict[str, Any]:
        content = {"application/json": {"schema": self.response}}
        for media in self.also:
            content[media] = {"schema": string()}
        responses: dict[str, Any] = {str(self.status): {"description": "OK", "content": content}}
        errors = {405, *self.errors}
        if self.security == "caller":
            errors.add(401)
        for status in sorted(errors):
            responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
        return responses


def error_responses() -> dict[str, Any]:
    """One named response per error status, each in the hub's one error shape."""
    return {
        f"Error{status}": {
            "description": reason,
            "content": {"application/json": {"schema": ref("Error")}},
        }
        for status, reason in ERROR_REASONS.items()
    }


ERROR_SCHEMA = obj(
    {
        "error": obj(
            {
                "message": string("What went wrong, for a person."),
                "type": string("The error's class, as OpenAI's SDKs read it."),
                "code": string("A stable code to branch on, e.g. `invalid_field`."),
                "param": nullable(string("The field or parameter at fault.")),
            },
            ("message", "type", "code", "param"),
        )
    },
    ("error",),
)
