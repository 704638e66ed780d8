"""A service's OpenAPI document as a contract (issue 9): every answer the kit
gives is documented on every operation, the bearer token is described, and
each operation names the roles that may call it.

Routes say what only they know, in `openapi_extra`:

    @router.post("/orders/{order_id}/verify",
                 openapi_extra=roles("lab_physician"),
                 responses={404: {"description": "no such order"}, 409: {...}})

and `contract(document, ...)` adds, on every operation:
- 413 (the body limit, also given as `x-max-body-bytes`), 422 (field paths
  and codes, no values) and 503 (the database away; Retry-After);
- where a token is needed: 401 (with WWW-Authenticate), and the roles as
  security alternatives (any one of them), with 403 when roles are named;
- an `Error` body for every other 4xx a route declares.
"""

from __future__ import annotations

import copy
from typing import Any

from .auth import ALGORITHM, ISSUER, LEEWAY_S, TOKEN_ERRORS
from .http_edge import INT64, LIMIT_KEY

ROLES_KEY = "x-roles"
SCHEME = "HTTPBearer"  # the name FastAPI gives the kit's HTTPBearer scheme

ERROR = {"type": "object", "required": ["detail"], "additionalProperties": False,
         "properties": {"detail": {"type": "string"}},
         "description": "What went wrong, as a short code or phrase: never a value sent."}
UNAUTHORIZED = {"type": "object", "required": ["detail"], "additionalProperties": False,
                "properties": {"detail": {"type": "string", "enum": list(TOKEN_ERRORS)}},
                "description": "Why the token was refused."}
VALIDATION_ERROR = {
    "type": "object", "title": "ValidationError", "required": ["loc", "type"],
    "additionalProperties": False,
    "properties": {
        "loc": {"type": "array",
                "items": {"anyOf": [{"type": "string"},
                                    {"type": "integer", "minimum": 0, "maximum": INT64[1]}]},
                "description": 'Where: "path", "query" or "header" and its name, or "body" '
                               'and the field path; "*" stands for a key the caller made up.'},
        "type": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$",
                 "description": "An error code (pydantic's, or control_character, "
                                "invalid_character, number_out_of_range, json_invalid)."},
    },
}
HTTP_VALIDATION_ERROR = {
    "type": "object", "title": "HTTPValidationError", "required": ["detail"],
    "additionalProperties": False,
    "properties": {"detail": {"type": "array", "maxItems": 50,
                              "items": {"$ref": "#/components/schemas/ValidationError"}}},
    "description": "The request is refused: each entry names a field and an error code, "
                   "never the value sent.",
}

READINESS = {"type": "object", "required": ["status", "failing"],
             "properties": {"status": {"const": "unavailable"},
                            "failing": {"type": "object",
                                        "additionalProperties": {"type": "string"}}}}


def roles(*names: str) -> dict[str, list[str]]:
    """`openapi_extra` of a route callable by a token with any one of `names`."""
    return {ROLES_KEY: list(names)}


def bearer_description(audience: str, all_roles: list[str]) -> str:
    role_list = ", ".join(f"`{r}`" for r in all_roles) or "none"
    return (
        f"A JWT signed with Ed25519 (JWS alg `{ALGORITHM}`, RFC 8037), sent as "
        "`Authorization: Bearer <token>` and issued by the identity provider; the service "
        "holds only the public key. Claims, all required: `sub` (the user id), `inst` (the "
        "user's institution id), `roles` (array of role names), `iat` and `exp` (seconds "
        f"since the epoch; {LEEWAY_S} s of clock difference tolerated), `iss` = "
        f'"{ISSUER}", `aud` = "{audience}" (a token for another service is refused). '
        "A missing, malformed, expired or wrongly signed token gets 401 with "
        "`WWW-Authenticate: Bearer` (with `error=\"invalid_token\"` and the reason when a "
        "token was sent) before the request body is read. Each operation's security "
        "requirements list the roles that may call it, any one of them; a token without "
        f"one gets 403. Roles of this service: {role_list}. Data out of the caller's "
        "institution scope is answered as missing (404)."
    )


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _bound_body_integers(node: Any) -> None:
    """Every integer in a body schema gets the bounds the edge enforces (bigint)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.setdefault("minimum", INT64[0])
            node.setdefault("maximum", INT64[1])
        for value in node.values():
            _bound_body_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_body_integers(value)


def contract(document: dict, *, audience: str, default_body_limit: int) -> dict:
    """The document FastAPI generated, completed as the module docstring says
    (a copy: the argument is not changed)."""
    doc = copy.deepcopy(document)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(Error=ERROR, Unauthorized=UNAUTHORIZED, ValidationError=VALIDATION_ERROR,
                   HTTPValidationError=HTTP_VALIDATION_ERROR)
    all_roles: set[str] = set()
    for methods in doc.get("paths", {}).values():
        for operation in methods.values():
            named = operation.pop(ROLES_KEY, None)
            operation.setdefault(LIMIT_KEY, default_body_limit)
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                if named:
                    all_roles.update(named)
                    operation["security"] = [{SCHEME: [role]} for role in named]
                    responses.setdefault("403", {"description": "The token has none of the "
                                                                "roles this operation needs."})
                responses["401"] = {
                    "description": "No token, or one that cannot be trusted (see the reason).",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"},
                                                     "description": 'Bearer, with error="'
                                                     'invalid_token" when a token was sent.'}},
                    "content": _json("Unauthorized")}
            responses["413"] = {"description": "The body is longer than x-max-body-bytes "
                                               "(declared or streamed); it is not read.",
                                "content": _json("Error")}
            responses["422"] = {"description": "Refused: a field (or a path, query or "
                                               "header value) is not valid, named with an "
                                               "error code.",
                                "content": _json("HTTPValidationError")}
            responses.setdefault("503", {
                "description": "The service cannot answer now (its database is away); "
                               "try again.",
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 0,
                                                       "maximum": 3600}}},
                "content": _json("Error")})
            for status, response in responses.items():
                if status.startswith("4") and "content" not in response:
                    response["content"] = _json("Error")
            if "requestBody" in operation:
                _bound_body_integers(operation["requestBody"])
    for name, schema in schemas.items():
        if name not in ("ValidationError", "HTTPValidationError"):
            _bound_body_integers(schema)
    readiness = doc.get("paths", {}).get("/readyz", {}).get("get")
    if readiness is not None:  # the kit's health route says which components are not ready
        readiness["responses"]["503"] = {"description": "Not ready: the failing components.",
                                         "content": {"application/json": {"schema": READINESS}}}
    scheme = components.get("securitySchemes", {}).get(SCHEME)
    if scheme is not None:
        scheme.update(bearerFormat="JWT",
                      description=bearer_description(audience, sorted(all_roles)))
    return doc
