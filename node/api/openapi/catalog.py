"""The catalog admin paths: users, roles and API keys, and the schemas of their documents."""

from __future__ import annotations

from typing import Any

from ...auth_policy import AuthPolicy
from ...catalog import ACTIONS, BUILTIN_ROLES
from ...catalog_documents import MAX_CIDRS, MAX_GRANTS, MAX_PATTERN_CHARS, MAX_REASON_CHARS
from ..http import JSON_INT_MAX
from ..users import MAX_PASSWORD_CHARS
from .parts import (
    CATALOG_WRITES,
    CIDR,
    NAME,
    NULLABLE_TEXT,
    Schema,
    error_responses,
    integer,
    json_body,
    obj,
    ok,
    path_param,
    ref,
)

# Roles and users that exist on every node (built in, or made by initdb): examples that work.
_ROLE = NAME | {"examples": ["reader"]}
_USER = NAME | {"examples": ["admin"]}


def schemas() -> dict[str, Schema]:
    grant = obj(
        {
            "actions": {"type": "array", "minItems": 1, "items": {"enum": list(ACTIONS)}},
            "pattern": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_CHARS},
        },
        ("actions", "pattern"),
        closed=True,
    )
    nullable_int = {"type": ["integer", "null"]}
    apikey: dict[str, Schema] = {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "user": {"type": "string"},
        "cidrs": {"type": "array", "items": {"type": "string"}},
        "expires_at": nullable_int,
        "created_at_ms": {"type": "integer"},
        "last_used_at": nullable_int,
    }
    return {
        "Grant": grant,
        "Grants": {"type": "array", "maxItems": MAX_GRANTS, "items": ref("Grant")},
        "User": obj(
            {
                "name": {"type": "string"},
                "roles": {"type": "array", "items": {"type": "string"}},
                "can_login": {"type": "boolean"},
                "locked_reason": NULLABLE_TEXT,
                "valid_until": nullable_int,
                "created_at_ms": nullable_int,
            },
            ("name", "roles", "can_login", "locked_reason", "valid_until"),
        ),
        "Role": obj(
            {"name": {"type": "string"}, "superuser": {"type": "boolean"}, "grants": {"type": "array", "items": grant}},
            ("name", "superuser", "grants"),
        ),
        "ApiKey": obj(apikey, tuple(apikey)),
    }


def _role_names(description: str) -> Schema:
    return {"type": "array", "items": _ROLE, "description": description}


def _users(policy: AuthPolicy) -> dict[str, dict[str, Any]]:
    name = path_param("name", NAME, "the user's name")
    password = {"type": "string", "minLength": policy.password_min_length, "maxLength": MAX_PASSWORD_CHARS}
    user = ok(ref("User"), "the user (never a password hash)")
    epoch_s = integer(0, JSON_INT_MAX) | {"type": ["integer", "null"]}
    return {
        "/v1/admin/users": {
            "get": {
                "operationId": "listUsers",
                "summary": "List users",
                "responses": {"200": ok(obj({"users": {"type": "array", "items": ref("User")}}, ("users",)), "users")},
            },
            "post": {
                "operationId": "createUser",
                "summary": "Create a user (like CREATE ROLE ... LOGIN)",
                "requestBody": json_body(
                    obj(
                        {
                            "name": NAME,
                            "password": password,
                            "roles": _role_names("existing roles (an unknown one is a 400); at most 100"),
                            "valid_until": epoch_s,
                        },
                        ("name", "password"),
                    ),
                    f"password_min_length = {policy.password_min_length} (the auth policy in force)",
                ),
                "responses": {"201": ok(ref("User"), "the new user")} | error_responses(400, 409, *CATALOG_WRITES),
            },
        },
        "/v1/admin/users/{name}": {
            "parameters": [name],
            "get": {
                "operationId": "getUser",
                "summary": "Show a user",
                "responses": {"200": user} | error_responses(400, 404, 409),
            },
            "delete": {
                "operationId": "deleteUser",
                "summary": "Delete a user and its API keys; its tokens stop working",
                "responses": {"204": {"description": "deleted"}} | error_responses(400, 404, 409, *CATALOG_WRITES),
            },
        },
        "/v1/admin/users/{name}/password": {
            "parameters": [name],
            "put": {
                "operationId": "setPassword",
                "summary": "Set a password; the user's live tokens stop working",
                "requestBody": json_body(obj({"password": password}, ("password",)), "the new password"),
                "responses": {"204": {"description": "changed"}} | error_responses(400, 404, 409, *CATALOG_WRITES),
            },
        },
        "/v1/admin/users/{name}/lock": {
            "parameters": [name],
            "post": {
                "operationId": "lockUser",
                "summary": "Lock a user: logins refused, live tokens stop working",
                "requestBody": json_body(
                    obj({"reason": {"type": ["string", "null"], "maxLength": MAX_REASON_CHARS}}),
                    "why (default: locked by an administrator)",
                    required=False,
                ),
                "responses": {"200": user} | error_responses(400, 404, 409, *CATALOG_WRITES),
            },
        },
        "/v1/admin/users/{name}/unlock": {
            "parameters": [name],
            "post": {
                "operationId": "unlockUser",
                "summary": "Unlock a user, and end a failed-login lockout of the name",
                "requestBody": json_body({"type": "object"}, "nothing is read from it", required=False),
                "responses": {"200": user} | error_responses(400, 404, 409, *CATALOG_WRITES),
            },
        },
        "/v1/admin/users/{name}/roles": {
            "parameters": [name],
            "post": {
                "operationId": "grantRoles",
                "summary": "Grant and revoke roles (effective on the user's next request)",
                "requestBody": json_body(
                    obj(
                        {
                            "grant": _role_names("existing roles (an unknown one is a 400)"),
                            "revoke": {"type": "array", "items": {"type": "string"}},
                        }
                    ),
                    "roles to add and to remove",
                    required=False,
                ),
                "responses": {"200": user} | error_responses(400, 404, 409, *CATALOG_WRITES),
            },
        },
    }


def _roles() -> dict[str, dict[str, Any]]:
    own_role = NAME | {"not": {"enum": list(BUILTIN_ROLES)}}
    own = path_param("name", own_role, "a role of your own: the built-in ones cannot change")
    role = ok(ref("Role"), "the role")
    return {
        "/v1/admin/roles": {
            "get": {
                "operationId": "listRoles",
                "summary": "List roles",
                "responses": {"200": ok(obj({"roles": {"type": "array", "items": ref("Role")}}, ("roles",)), "roles")},
            },
            "post": {
                "operationId": "createRole",
                "summary": "Create a role granting actions on key patterns",
                "requestBody": json_body(
                    obj({"name": own_role, "superuser": {"type": "boolean"}, "grants": ref("Grants")}, ("name",)),
                    "patterns are shell-style (app:*)",
                ),
                "responses": {"201": ok(ref("Role"), "the new role")} | error_responses(400, 409, *CATALOG_WRITES),
            },
        },
        "/v1/admin/roles/{name}": {
            "get": {
                "operationId": "getRole",
                "summary": "Show a role",
                "parameters": [path_param("name", NAME, "the role's name")],
                "responses": {"200": role} | error_responses(400, 404, 409),
            },
            "patch": {
                "operationId": "alterRole",
                "summary": "Grant and revoke actions on patterns, or change superuser (like GRANT/REVOKE)",
                "parameters": [own],
                "requestBody": json_body(
                    obj(
                        {"grant": ref("Grants"), "revoke": ref("Grants"), "superuser": {"type": "boolean"}},
                        (),
                        closed=True,
                    )
                    | {"minProperties": 1},
                    f"the role keeps at most {MAX_GRANTS} patterns",
                ),
                "responses": {"200": role} | error_responses(400, 404, 409, *CATALOG_WRITES),
            },
            "delete": {
                "operationId": "deleteRole",
                "summary": "Delete a role and every membership in it",
                "parameters": [own],
                "responses": {"204": {"description": "deleted"}} | error_responses(400, 404, 409, *CATALOG_WRITES),
            },
        },
    }


def _apikeys() -> dict[str, dict[str, Any]]:
    created = obj({"token": {"type": "string", "pattern": "^kv_[0-9a-f]+_"}}, ("token",))
    return {
        "/v1/admin/apikeys": {
            "get": {
                "operationId": "listApiKeys",
                "summary": "List API keys (never a secret)",
                "responses": {
                    "200": ok(obj({"apikeys": {"type": "array", "items": ref("ApiKey")}}, ("apikeys",)), "the keys")
                },
            },
            "post": {
                "operationId": "createApiKey",
                "summary": "Create an API key acting as a user; its token kv_<id>_<secret> is shown only here",
                "requestBody": json_body(
                    obj(
                        {
                            "name": NAME,
                            "user": _USER | {"description": "an existing user (an unknown one is a 400)"},
                            "cidrs": {"type": ["array", "null"], "maxItems": MAX_CIDRS, "items": CIDR},
                            "expires_at": integer(0, JSON_INT_MAX) | {"type": ["integer", "null"]},
                        },
                        ("name", "user"),
                    ),
                    "cidrs: the networks it may be used from (none: any); expires_at: epoch seconds",
                ),
                "responses": {"201": ok({"allOf": [ref("ApiKey"), created]}, "the key and its token")}
                | error_responses(400, 409, *CATALOG_WRITES),
            },
        },
        "/v1/admin/apikeys/{name}": {
            "delete": {
                "operationId": "revokeApiKey",
                "summary": "Revoke an API key",
                "parameters": [path_param("name", NAME, "the key's name")],
                "responses": {"204": {"description": "revoked"}} | error_responses(400, 404, *CATALOG_WRITES),
            }
        },
    }


def paths(policy: AuthPolicy) -> dict[str, dict[str, Any]]:
    return {**_users(policy), **_roles(), **_apikeys()}
