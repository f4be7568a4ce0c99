"""An OpenAPI 3.1 description of the hub's admin, user and payment JSON APIs."""

from hub.openapi.document import OPENAPI_PATH, OPERATIONS, document, openapi_route

__all__ = ["OPENAPI_PATH", "OPERATIONS", "document", "openapi_route"]
