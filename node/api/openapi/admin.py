"""The admin and replication paths: catalogs, host rules, signing keys, the auth policy,
checkpoints, WAL inspection, WAL shipping and failover."""

from __future__ import annotations

from typing import Any

from ... import auth_policy, hba
from ...auth_policy import AuthPolicy
from ...catalog import ACTIONS, BUILTIN_ROLES
from ...catalog_documents import MAX_CIDRS, MAX_GRANTS, MAX_PATTERN_CHARS, MAX_REASON_CHARS
from ...config import Settings
from ..admin import WAL_RECORDS_MAX
from ..http import JSON_INT_MAX, LSN_PATTERN, VERSION_ETAG_PATTERN
from ..replication import MAX_POSITION, MAX_SLOT_CHARS
from ..users import MAX_PASSWORD_CHARS
from .parts import (
    CIDR,
    LSN_TEXT,
    NAME,
    NULLABLE_TEXT,
    Schema,
    error_responses,
    header,
    header_param,
    integer,
    json_body,
    obj,
    ok,
    path_param,
    query_param,
    ref,
)

_WRITES = (421, 504)  # a catalog change is a write: refused on a replica, bounded by synchronous commit
_VERSION_ETAG = {"type": "string", "pattern": '^(W/)?"[0-9]+"$'}
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


def _role_names(description: str) -> Schema:
    return {"type": "array", "items": _ROLE, "description": description}


def _auth_settings() -> Schema:
    fields = {name: integer(*auth_policy.BOUNDS[name]) for name in auth_policy.FIELDS}
    return obj(fields, (), closed=True) | {"minProperties": 1}


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
                "responses": {"201": ok(ref("User"), "the new user")} | error_responses(400, 409, *_WRITES),
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
                "responses": {"204": {"description": "deleted"}} | error_responses(400, 404, 409, *_WRITES),
            },
        },
        "/v1/admin/users/{name}/password": {
            "parameters": [name],
            "put": {
                "operationId": "setPassword",
                "summary": "Set a password; the user's live tokens stop working",
                "requestBody": json_body(obj({"password": password}, ("password",)), "the new password"),
                "responses": {"204": {"description": "changed"}} | error_responses(400, 404, 409, *_WRITES),
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
                "responses": {"200": user} | error_responses(400, 404, 409, *_WRITES),
            },
        },
        "/v1/admin/users/{name}/unlock": {
            "parameters": [name],
            "post": {
                "operationId": "unlockUser",
                "summary": "Unlock a user, and end a failed-login lockout of the name",
                "requestBody": json_body({"type": "object"}, "nothing is read from it", required=False),
                "responses": {"200": user} | error_responses(400, 404, 409, *_WRITES),
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
                "responses": {"200": user} | error_responses(400, 404, 409, *_WRITES),
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
                "responses": {"201": ok(ref("Role"), "the new role")} | error_responses(400, 409, *_WRITES),
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
                "responses": {"200": role} | error_responses(400, 404, 409, *_WRITES),
            },
            "delete": {
                "operationId": "deleteRole",
                "summary": "Delete a role and every membership in it",
                "parameters": [own],
                "responses": {"204": {"description": "deleted"}} | error_responses(400, 404, 409, *_WRITES),
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
                | error_responses(400, 409, *_WRITES),
            },
        },
        "/v1/admin/apikeys/{name}": {
            "delete": {
                "operationId": "revokeApiKey",
                "summary": "Revoke an API key",
                "parameters": [path_param("name", NAME, "the key's name")],
                "responses": {"204": {"description": "revoked"}} | error_responses(400, 404, *_WRITES),
            }
        },
    }


def _security(policy: AuthPolicy) -> dict[str, dict[str, Any]]:
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
                "responses": {"200": ok(rules, "the stored rules", etag)} | error_responses(400, 409, 412, *_WRITES),
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
                "responses": {"200": ok(jwt_keys, "the keys after the rotation")} | error_responses(400, 409, *_WRITES),
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
                "responses": {"200": ok(settings, "the new policy", etag)} | error_responses(400, 409, 412, *_WRITES),
            },
        },
    }


def _operations(settings: Settings) -> dict[str, dict[str, Any]]:
    checkpoint = obj(
        {
            "redo_lsn": LSN_TEXT,
            "snapshot": {"type": ["string", "null"]},
            "entries": {"type": "integer"},
            "snapshot_bytes": {"type": "integer"},
            "segments_removed": {"type": "integer"},
            "seconds": {"type": "number"},
        },
        ("redo_lsn", "snapshot", "entries", "snapshot_bytes", "segments_removed", "seconds"),
    )
    run_checkpoint = {
        "summary": "Run a checkpoint now (a snapshot, then WAL no longer needed is removed)",
        "responses": {"200": ok(checkpoint, "the checkpoint")},
    }
    segment = obj(
        {"name": {"type": "string"}, "start_lsn": LSN_TEXT, "bytes": {"type": "integer"}},
        ("name", "start_lsn", "bytes"),
    )
    wal = obj(
        {
            **{name: LSN_TEXT for name in ("end_lsn", "flushed_lsn", "committed_lsn", "redo_lsn")},
            "fsync": {"enum": ["always", "interval", "off"]},
            "segments": {"type": "array", "items": segment},
        },
        ("end_lsn", "flushed_lsn", "committed_lsn", "redo_lsn", "fsync", "segments"),
    )
    snapshot = obj(
        {"name": {"type": "string"}, "bytes": {"type": "integer"}, "current": {"type": "boolean"}},
        ("name", "bytes", "current"),
    )
    return {
        "/v1/admin/checkpoint": {"post": {"operationId": "checkpoint", **run_checkpoint}},
        "/v1/admin/snapshots": {
            "get": {
                "operationId": "listSnapshots",
                "summary": "Snapshots in base/",
                "responses": {
                    "200": ok(obj({"snapshots": {"type": "array", "items": snapshot}}, ("snapshots",)), "the snapshots")
                },
            },
            "post": {"operationId": "createSnapshot", **run_checkpoint},
        },
        "/v1/admin/wal": {
            "get": {
                "operationId": "walInfo",
                "summary": "WAL positions and segments",
                "responses": {"200": ok(wal, "the WAL")},
            }
        },
        "/v1/admin/wal/records": {
            "get": {
                "operationId": "walRecords",
                "summary": "WAL records as NDJSON, one object a line, from from_lsn (default: now)",
                "parameters": [
                    query_param("from_lsn", {"type": "string", "pattern": LSN_PATTERN}, "X/Y, or a byte position"),
                    query_param(
                        "limit", integer(1, WAL_RECORDS_MAX), f"at most this many records (default {WAL_RECORDS_MAX})"
                    ),
                    query_param(
                        "follow",
                        {"type": "boolean"},
                        "keep streaming records as they commit (empty lines keep the "
                        "connection alive) until the client leaves",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "NDJSON: {lsn, end_lsn, kind, ...} per line",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    }
                }
                | error_responses(400),
            }
        },
        "/v1/admin/digest": {
            "get": {
                "operationId": "digest",
                "summary": "SHA-256 over every key, value, version and expiry, in key order",
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                "keys": {"type": "integer"},
                                "applied_lsn": {"type": "integer"},
                                "revision": {"type": "integer"},
                                "seconds": {"type": "number"},
                            },
                            ("digest", "keys", "applied_lsn", "revision", "seconds"),
                        ),
                        "the digest at applied_lsn",
                    )
                },
            }
        },
    }


def _replication() -> dict[str, dict[str, Any]]:
    slot = query_param(
        "slot", {"type": "string", "minLength": 1, "maxLength": MAX_SLOT_CHARS}, "the replica's name", required=True
    )
    position = integer(0, MAX_POSITION)
    feedback = obj(
        {"slot": {"type": "string", "minLength": 1, "maxLength": MAX_SLOT_CHARS}}
        | {name: position for name in ("timeline", "write_lsn", "flush_lsn", "apply_lsn")},
        ("slot", "timeline", "write_lsn", "flush_lsn", "apply_lsn"),
    )
    backup_headers = {
        name: header({"type": "string"}, what)
        for name, what in (
            ("X-KV-System-Identifier", "the cluster's system identifier"),
            ("X-KV-Timeline", "the primary's timeline"),
            ("X-KV-Redo-LSN", "replay from here (a byte position)"),
            ("X-KV-Start-LSN", "stream from here (a byte position)"),
            ("X-KV-Consistent-LSN", "the snapshot is consistent once replayed to here"),
            ("X-KV-Snapshot", "the snapshot's file name"),
            ("X-KV-Snapshot-Bytes", "its size"),
        )
    }
    return {
        "/v1/replication/system": {
            "get": {
                "operationId": "systemIdentifier",
                "summary": "This node's system identifier, without credentials: how a node checks that a URL is a "
                "node of its cluster before sending it the replication user's password (rejoin)",
                "responses": {
                    "200": ok(
                        obj({"system_identifier": {"type": "string"}}, ("system_identifier",)), "the system identifier"
                    )
                },
            }
        },
        "/v1/replication/identify": {
            "get": {
                "operationId": "identifySystem",
                "summary": "System identifier, role, timeline and its history (the replication role or a superuser)",
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "system_identifier": {"type": "string"},
                                "timeline": {"type": "integer"},
                                "role": {"enum": ["primary", "replica"]},
                                "committed_lsn": {"type": "integer"},
                                "history": {"type": "array", "items": {"type": "object"}},
                                "fenced": {"type": ["string", "null"]},
                            },
                            ("system_identifier", "timeline", "role", "committed_lsn", "history", "fenced"),
                        ),
                        "who this node is",
                    )
                },
            }
        },
        "/v1/replication/stream": {
            "get": {
                "operationId": "streamWal",
                "summary": "The WAL from from_lsn as CRC-framed messages, until the client leaves; a replica on a "
                "newer timeline fences this node",
                "parameters": [
                    query_param("from_lsn", position, "a byte position", required=True),
                    query_param("timeline", position, "the replica's timeline", required=True),
                    slot,
                    query_param("system_identifier", {"type": "string"}, "refuse (409) if this node's differs"),
                ],
                "responses": {
                    "200": {
                        "description": "the stream",
                        "content": {"application/x-kvstore-wal": {"schema": {"type": "string", "format": "binary"}}},
                    }
                }
                | error_responses(400, 409),
            }
        },
        "/v1/replication/basebackup": {
            "get": {
                "operationId": "baseBackup",
                "summary": "A fresh checkpoint's snapshot; the slot keeps the WAL needed after it",
                "parameters": [slot],
                "responses": {
                    "200": {
                        "description": "the snapshot file",
                        "headers": backup_headers,
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    }
                }
                | error_responses(400, 409, 421),
            }
        },
        "/v1/replication/feedback": {
            "post": {
                "operationId": "replicationFeedback",
                "summary": "A replica reports its positions (byte positions); a newer timeline fences this node; a "
                "position beyond this node's WAL end is refused (400 lsn_beyond_wal_end), the slot unchanged",
                "requestBody": json_body(feedback, "the replica's slot, timeline and LSNs"),
                "responses": {
                    "200": ok(
                        obj(
                            {"timeline": {"type": "integer"}, "committed_lsn": {"type": "integer"}},
                            ("timeline", "committed_lsn"),
                        ),
                        "this node's timeline and committed LSN",
                    )
                }
                | error_responses(400, 409),
            }
        },
        "/v1/admin/promote": {
            "post": {
                "operationId": "promote",
                "summary": "Make this replica the primary of a new timeline",
                "responses": {"200": ok({"type": "object"}, "the new timeline, its switch LSN")} | error_responses(409),
            }
        },
        "/v1/admin/rejoin": {
            "post": {
                "operationId": "rejoin",
                "summary": "Follow the primary at this URL: divergent WAL is moved into diverged/ (or the data, for a "
                "new base backup); the node restarts as its replica. The URL is a node's base URL (no path, query "
                "or user@); it must answer /v1/replication/system with this node's system identifier before the "
                "replication credentials are sent to it (400 not_a_cluster_node otherwise)",
                "requestBody": json_body(
                    obj({"primary": {"type": "string", "pattern": "^https?://"}}, ("primary",)), "the new primary"
                ),
                "responses": {"202": ok({"type": "object"}, "the plan: follow, rewind or rebootstrap")}
                | error_responses(400, 409),
            }
        },
    }


def paths(settings: Settings, policy: AuthPolicy) -> dict[str, dict[str, Any]]:
    return {
        **_users(policy),
        **_roles(),
        **_apikeys(),
        **_security(policy),
        **_operations(settings),
        **_replication(),
    }
