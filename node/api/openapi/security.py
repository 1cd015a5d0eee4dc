"""The security admin paths: host rules, token signing keys and the auth policy."""

from __future__ import annotations

from typing import Any

from ... import auth_policy, hba
from ..audit import AUDIT_USER_MAX_CHARS
from ..http import VERSION_ETAG_PATTERN
from .parts import (
    CATALOG_WRITES,
    CIDR,
    Schema,
    error_responses,
    header,
    header_param,
    integer,
    json_body,
    obj,
    ok,
    query_param,
    ref,
)

_VERSION_ETAG = {"type": "string", "pattern": '^(W/)?"[0-9]+"$'}


def schemas() -> dict[str, Schema]:
    return {
        "HostRule": obj(
            {
                "action": {"enum": list(hba.ACTIONS)},
                "cidr": CIDR,
                "user": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
                "role": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
                "comment": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
            },
            ("action", "cidr"),
            closed=True,
        ),
    }


def _auth_settings() -> Schema:
    fields = {name: integer(*auth_policy.BOUNDS[name]) for name in auth_policy.FIELDS}
    return obj(fields, (), closed=True) | {"minProperties": 1}


def paths() -> dict[str, dict[str, Any]]:
    etag = {"ETag": header(_VERSION_ETAG, "the document's version", required=False)}
    if_match = header_param(
        "If-Match", {"type": "string", "pattern": VERSION_ETAG_PATTERN}, "change only this version (else 412)"
    )
    rules = obj(
        {"rules": {"type": "array", "items": ref("HostRule")}, "version": {"type": ["integer", "null"]}},
        ("rules", "version"),
    )
    jwt_keys = obj(
        {
            "current": {"type": "string"},
            "keys": {
                "type": "array",
                "items": obj(
                    {"kid": {"type": "string"}, "current": {"type": "boolean"}, "created_at_ms": {"type": "integer"}},
                    ("kid", "current", "created_at_ms"),
                ),
            },
        },
        ("current", "keys"),
    )
    settings = obj(
        {
            "settings": obj({name: {"type": "integer"} for name in auth_policy.FIELDS}, auth_policy.FIELDS),
            "version": {"type": ["integer", "null"]},
        },
        ("settings", "version"),
    )
    return {
        "/v1/admin/hba": {
            "get": {
                "operationId": "getHostRules",
                "summary": "Host rules (pg_hba) in order: the first that matches decides, none rejects",
                "responses": {"200": ok(rules, "the rules and their version", etag)} | error_responses(409),
            },
            "put": {
                "operationId": "putHostRules",
                "summary": "Replace the host rules; refused (400 would_lock_out) when they would reject the caller, "
                "unless force=true",
                "parameters": [
                    query_param("force", {"type": "boolean"}, "store rules that reject the caller"),
                    if_match,
                ],
                "requestBody": json_body(
                    obj(
                        {"rules": {"type": "array", "maxItems": hba.MAX_RULES, "items": ref("HostRule")}},
                        ("rules",),
                        closed=True,
                    ),
                    "the new rules, in order",
                ),
                "responses": {"200": ok(rules, "the stored rules", etag)}
                | error_responses(400, 409, 412, *CATALOG_WRITES),
            },
        },
        "/v1/admin/jwt-keys": {
            "get": {
                "operationId": "getSigningKeys",
                "summary": "Token signing keys (never a secret)",
                "responses": {"200": ok(jwt_keys, "the keys, newest first")} | error_responses(409),
            }
        },
        "/v1/admin/jwt-keys/rotate": {
            "post": {
                "operationId": "rotateSigningKey",
                "summary": "A new current signing key; older ones verify until their tokens expire, or drop_old: "
                "drop them now (every JWT stops working)",
                "requestBody": json_body(
                    obj({"drop_old": {"type": "boolean"}}, (), closed=True), "empty, or drop_old", required=False
                ),
                "responses": {"200": ok(jwt_keys, "the keys after the rotation")}
                | error_responses(400, 409, *CATALOG_WRITES),
            }
        },
        "/v1/admin/audit": {
            "get": {
                "operationId": "readAuditLog",
                "summary": "The audit log (logins, refusals, user, role, key and policy changes) as NDJSON, oldest "
                "retained line first",
                "parameters": [
                    query_param(
                        "since",
                        {"type": "string", "format": "date-time"},
                        "ISO 8601 time (no zone: UTC); lines from that second on",
                    ),
                    query_param(
                        "user",
                        {"type": "string", "minLength": 1, "maxLength": AUDIT_USER_MAX_CHARS},
                        "lines about this user: its user, by (the actor), or among an aggregated line's users",
                    ),
                    query_param(
                        "follow",
                        {"type": "boolean"},
                        "then keep streaming lines as they are written (empty lines keep the connection alive) "
                        "until the client leaves",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "NDJSON: {ts, event, ...} per line, as written to data/log/audit.jsonl",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    }
                }
                | error_responses(400),
            }
        },
        "/v1/admin/settings/auth": {
            "get": {
                "operationId": "getAuthSettings",
                "summary": "The cluster's auth policy (password minimum, token lifetime, lockout, argon2 parameters)",
                "responses": {"200": ok(settings, "the policy in force and its version", etag)},
            },
            "patch": {
                "operationId": "changeAuthSettings",
                "summary": "Change some of the auth policy; effective on the next request",
                "parameters": [if_match],
                "requestBody": json_body(
                    _auth_settings(),
                    "password_hash_memory_kib must stay at least 8 x password_hash_parallelism (argon2)",
                ),
                "responses": {"200": ok(settings, "the new policy", etag)}
                | error_responses(400, 409, 412, *CATALOG_WRITES),
            },
        },
    }
