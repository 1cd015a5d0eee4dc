"""The OpenAPI 3.1 description served at /openapi.json (kept beside the routes it describes)."""

from __future__ import annotations

from typing import Any

import orjson

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad input",
        401: "missing or bad credentials",
        403: "not allowed",
        404: "not found",
        409: "changed by someone else meanwhile, or already exists",
        412: "precondition failed",
        413: "too large",
        429: "too many requests in flight",
        503: "not ready, or writes refused",
    }
    return {str(code): _json(_ERROR, text[code]) for code in codes}


_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_WRITE_RESULT = {
    "type": "object",
    "properties": {"key": {"type": "string"}, "version": {"type": "integer"}, "commit_lsn": {"type": "string"}},
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "KVStore++", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        "required": ["code", "message"],
                    }
                },
            }
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/kv/{key}": {
            "parameters": [_KEY],
            "get": {
                "summary": "Read a value (raw bytes); ETag is the version, X-KV-Expires-At the expiry",
                "responses": {"200": {"description": "the value"}, "304": {"description": "not modified"}}
                | _errors(400, 401, 403, 404),
            },
            "put": {
                "summary": "Write a value; If-Match for compare-and-set, If-None-Match: * to create only",
                "parameters": [{"name": "ttl", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
                "responses": {"200": _json(_WRITE_RESULT, "updated"), "201": _json(_WRITE_RESULT, "created")}
                | _errors(400, 401, 403, 412, 413, 429, 503),
            },
            "delete": {
                "summary": "Delete a key; If-Match supported",
                "responses": {"204": {"description": "deleted"}} | _errors(400, 401, 403, 404, 412, 503),
            },
        },
        "/v1/kv/{key}/incr": {
            "parameters": [_KEY],
            "post": {
                "summary": "Add `by` (default 1) to an integer value, like Redis INCRBY",
                "parameters": [{"name": "by", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": _json(_WRITE_RESULT, "new value")} | _errors(400, 401, 403, 412, 503),
            },
        },
        "/v1/kv": {
            "get": {
                "summary": "List keys in order, paginated",
                "parameters": [
                    {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
                "responses": {"200": _json({"type": "object"}, "a page of keys and next_after")} | _errors(400, 401),
            }
        },
        "/v1/txn": {
            "post": {
                "summary": "Apply several set/del/check ops atomically (one WAL record)",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["ops"],
                                "properties": {
                                    "ops": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["op", "key"],
                                            "properties": {
                                                "op": {"enum": ["set", "del", "check"]},
                                                "key": {"type": "string"},
                                                "value": {"type": "string"},
                                                "value_base64": {"type": "string"},
                                                "ttl": {"type": "integer"},
                                                "if_version": {"type": "integer"},
                                                "if_absent": {"type": "boolean"},
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    }
                },
                "responses": {"200": _json({"type": "object"}, "results")} | _errors(400, 401, 403, 412, 413, 503),
            }
        },
        "/v1/auth/login": {
            "post": {
                "security": [],
                "summary": "Exchange a username and password for a JWT",
                "responses": {"200": _json({"type": "object"}, "token")} | _errors(400, 401),
            }
        },
        "/v1/status": {"get": {"summary": "Role, timeline, LSNs", "responses": {"200": _json({"type": "object"}, "")}}},
        "/v1/admin/checkpoint": {"post": {"summary": "Run a checkpoint now", "responses": {"200": _json({}, "")}}},
        "/v1/admin/snapshots": {
            "get": {"summary": "List snapshots", "responses": {"200": _json({}, "")}},
            "post": {"summary": "Create a snapshot (runs a checkpoint)", "responses": {"200": _json({}, "")}},
        },
        "/v1/admin/users": {
            "get": {"summary": "List users (never password hashes)", "responses": {"200": _json({}, "")}},
            "post": {
                "summary": "Create a user: {name, password, roles, valid_until}",
                "responses": {"201": _json({}, "the user")} | _errors(400, 401, 403),
            },
        },
        "/v1/admin/users/{name}": {
            "get": {"summary": "Show a user", "responses": {"200": _json({}, "")} | _errors(404)},
            "delete": {"summary": "Delete a user (its tokens stop working)", "responses": {"204": {"description": ""}}},
        },
        "/v1/admin/users/{name}/password": {
            "put": {
                "summary": "Change a password (live tokens stop working)",
                "responses": {"204": {"description": ""}},
            }
        },
        "/v1/admin/users/{name}/lock": {"post": {"summary": "Lock with {reason}", "responses": {"200": _json({}, "")}}},
        "/v1/admin/users/{name}/unlock": {"post": {"summary": "Unlock", "responses": {"200": _json({}, "")}}},
        "/v1/admin/users/{name}/roles": {
            "post": {"summary": "Grant/revoke roles: {grant, revoke}", "responses": {"200": _json({}, "")}}
        },
        "/v1/admin/roles": {
            "get": {"summary": "List roles", "responses": {"200": _json({}, "")}},
            "post": {
                "summary": "Create a role: {name, superuser, grants: [{actions, pattern}]}",
                "responses": {"201": _json({}, "the role")},
            },
        },
        "/v1/admin/roles/{name}": {
            "get": {"summary": "Show a role", "responses": {"200": _json({}, "")}},
            "delete": {"summary": "Delete a role (not a built-in one)", "responses": {"204": {"description": ""}}},
        },
        "/v1/admin/apikeys": {
            "get": {"summary": "List API keys (never a secret)", "responses": {"200": _json({}, "")}},
            "post": {
                "summary": "Create an API key {name, user, cidrs, expires_at}; the token kv_<id>_<secret> is shown once",
                "responses": {"201": _json({}, "the key and its token")} | _errors(400, 401, 403),
            },
        },
        "/v1/admin/apikeys/{name}": {
            "delete": {"summary": "Revoke an API key", "responses": {"204": {"description": ""}} | _errors(404)}
        },
        "/v1/admin/hba": {
            "get": {"summary": "Host rules in order, with their version (ETag)", "responses": {"200": _json({}, "")}},
            "put": {
                "summary": "Replace the host rules {rules: [{action, cidr, user?, role?, comment?}]}; If-Match: "
                "version; refused when they would lock the caller out unless ?force=true",
                "responses": {"200": _json({}, "the stored rules")} | _errors(400, 401, 403, 409, 412),
            },
        },
        "/v1/admin/jwt-keys": {
            "get": {"summary": "Token signing keys (never a secret)", "responses": {"200": _json({}, "")}}
        },
        "/v1/admin/jwt-keys/rotate": {
            "post": {
                "summary": "New current signing key; older ones verify until their tokens expire, or {drop_old: true}",
                "responses": {"200": _json({}, "the keys")} | _errors(400, 401, 403),
            }
        },
        "/v1/admin/promote": {
            "post": {
                "summary": "Replica -> primary of a new timeline; reports the switch LSN and bytes never received",
                "responses": {"200": _json({}, "the new timeline")} | _errors(401, 403, 409),
            }
        },
        "/v1/admin/rejoin": {
            "post": {
                "summary": "Follow {primary}: rewind the divergent WAL into diverged/ (or re-bootstrap), restart",
                "responses": {"202": _json({}, "the plan")} | _errors(400, 401, 403),
            }
        },
        "/v1/admin/digest": {
            "get": {"summary": "SHA-256 over every key, value, version, expiry", "responses": {"200": _json({}, "")}}
        },
        "/v1/replication/identify": {
            "get": {"summary": "System id, role, timeline, history", "responses": {"200": _json({}, "")}}
        },
        "/v1/replication/stream": {
            "get": {
                "summary": "WAL stream from from_lsn (timeline, slot, system_identifier): CRC-framed messages",
                "responses": {"200": {"description": "application/x-kvstore-wal"}} | _errors(400, 401, 403, 409),
            }
        },
        "/v1/replication/basebackup": {
            "get": {
                "summary": "A fresh snapshot; X-KV-Redo-LSN, X-KV-Start-LSN, X-KV-Timeline headers",
                "responses": {"200": {"description": "the snapshot file"}} | _errors(401, 403, 409),
            }
        },
        "/v1/replication/feedback": {
            "post": {
                "summary": "{slot, timeline, write_lsn, flush_lsn, apply_lsn} from a replica",
                "responses": {"200": _json({}, "")} | _errors(400, 401, 403, 409),
            }
        },
        "/v1/admin/wal": {"get": {"summary": "WAL positions and segments", "responses": {"200": _json({}, "")}}},
        "/v1/admin/wal/records": {
            "get": {
                "summary": "WAL records as NDJSON from from_lsn; follow=true streams new ones",
                "responses": {"200": {"description": "NDJSON stream"}},
            }
        },
        "/health": {"get": {"security": [], "summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/ready": {
            "get": {
                "security": [],
                "summary": "Readiness: 200 only after recovery",
                "responses": {"200": {"description": "ready"}, "503": {"description": "recovering"}},
            }
        },
        "/metrics": {
            "get": {"security": [], "summary": "Prometheus metrics", "responses": {"200": {"description": ""}}}
        },
    },
}

DOCUMENT = orjson.dumps(SPEC)
