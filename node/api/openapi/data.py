"""The data API's paths: keys, counters, listings, transactions, login, status and the probes."""

from __future__ import annotations

from typing import Any

from ...auth_policy import AuthPolicy
from ...config import Settings
from ..http import JSON_INT_MAX, VERSION_ETAG_PATTERN
from .parts import (
    IDEMPOTENT_REPLAYED,
    INT64_MAX,
    INT64_MIN,
    LSN_TEXT,
    Schema,
    decoding_to_at_most,
    error_responses,
    header,
    header_param,
    idempotency_key_header,
    integer,
    json_body,
    key,
    min_lsn_header,
    obj,
    ok,
    path_param,
    query_param,
    utf8_text,
)

# The login route's own bounds (app.py): longer is a 400 before any password is hashed.
MAX_LOGIN_USERNAME_CHARS = 256
MAX_LOGIN_PASSWORD_CHARS = 1024
# /v1/status "lsn": PostgreSQL's names (node/status.py says what each one is).
STATUS_LSNS = ("insert_lsn", "write_lsn", "flush_lsn", "commit_lsn", "apply_lsn", "redo_lsn")

_VERSION_ETAG = {"type": "string", "pattern": '^(W/)?"[0-9]+"$', "examples": ['"42"']}
_WRITE_HEADERS = {
    "ETag": header(_VERSION_ETAG, "the key's new version"),
    "X-KV-Commit-LSN": header(LSN_TEXT, "the write's commit LSN (send it as X-KV-Min-LSN to read it on a replica)"),
    "X-KV-Timeline": header({"type": "string", "pattern": "^[0-9]+$"}, "the timeline the write was made on"),
}
_REPLAYABLE = _WRITE_HEADERS | {"Idempotent-Replayed": IDEMPOTENT_REPLAYED}
_TXN_HEADERS = {name: _REPLAYABLE[name] for name in ("X-KV-Commit-LSN", "X-KV-Timeline", "Idempotent-Replayed")}


def _write_result(extra: dict[str, Schema] | None = None) -> Schema:
    properties = {"key": {"type": "string"}, "version": {"type": "integer"}, "commit_lsn": LSN_TEXT}
    properties |= {"timeline": {"type": "integer"}, **(extra or {})}
    return obj(properties, tuple(properties))


def _if_match(description: str) -> Schema:
    return header_param("If-Match", {"type": "string", "pattern": VERSION_ETAG_PATTERN}, description)


def _txn_body(settings: Settings) -> Schema:
    common = {
        "key": key(settings.max_key_bytes, catalog=True),
        "ttl": integer(1, settings.max_ttl_s) | {"type": ["integer", "null"]},
        "if_version": integer(0, JSON_INT_MAX) | {"type": ["integer", "null"]},
        "if_absent": {"type": "boolean"},
    }
    base64 = {"type": "string", "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}
    base64 |= decoding_to_at_most(settings.max_value_bytes)
    set_op = obj(
        {"op": {"const": "set"}, **common, "value": utf8_text(settings.max_value_bytes), "value_base64": base64},
        ("op", "key"),
    )
    set_op["oneOf"] = [{"required": ["value"]}, {"required": ["value_base64"]}]
    # del and check may name a key the character rule refuses (one an older version stored).
    any_key = {name: rule for name, rule in common["key"].items() if name != "pattern"}
    other_op = obj({"op": {"enum": ["del", "check"]}, **common, "key": any_key}, ("op", "key"))
    return obj(
        {
            "ops": {
                "type": "array",
                "minItems": 1,
                "maxItems": settings.max_txn_ops,
                "items": {"anyOf": [set_op, other_op]},
            }
        },
        ("ops",),
    )


def _key_param(max_key_bytes: int, suffix: str = "") -> Schema:
    return path_param(
        "key",
        key(max_key_bytes, catalog=False, ascii_around=len(suffix)),
        f"any text of 1 to max_key_bytes = {max_key_bytes} UTF-8 bytes{' with ' + suffix if suffix else ''} "
        "(the schema states it in characters, soundly), percent-encoded in the path ('/' too); keys under _sys. "
        "are the system catalogs, below",
    )


def _key_operations(settings: Settings, suffix: str) -> dict[str, Any]:
    """GET, PUT and DELETE of the key named by the path: `{key}`, or `{key}/incr` with suffix /incr."""
    named = "" if not suffix else f" (the key `{{key}}{suffix}`: POST on this path is INCR of `{{key}}`)"
    ids = "" if not suffix else "IncrSuffixed"
    key_param = _key_param(settings.max_key_bytes, suffix)
    idempotency = idempotency_key_header(settings.idempotency_ttl_s)
    value_body = {
        "type": "string",
        "format": "binary",
        "maxLength": settings.max_value_bytes,
        "description": f"the raw value, at most max_value_bytes = {settings.max_value_bytes} bytes",
    }
    return {
        "get": {
            "operationId": f"getKey{ids}",
            "summary": f"Read a value (raw bytes); ETag is its version{named}",
            "parameters": [
                key_param,
                header_param(
                    "If-None-Match", {"type": "string"}, "the ETag read before, or *: 304 when it still holds"
                ),
                min_lsn_header(settings.min_lsn_wait_s),
            ],
            "responses": {
                "200": {
                    "description": "the value",
                    "headers": {
                        "ETag": header(_VERSION_ETAG, "the key's version"),
                        "X-KV-Expires-At": header({"type": "string"}, "when a TTL ends (ISO 8601)", required=False),
                        "X-KV-LSN": header({"type": "string"}, "the LSN read at: a watch from it misses nothing"),
                    },
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                "304": {
                    "description": "If-None-Match still holds",
                    "headers": {"ETag": header(_VERSION_ETAG, "the key's version")},
                },
            }
            | error_responses(400, 404, 504),
        },
        "put": {
            "operationId": f"putKey{ids}",
            "summary": f"Write a value; If-Match: its version (compare-and-set), If-None-Match: * (create only){named}",
            "parameters": [
                key_param,
                query_param("ttl", integer(1, settings.max_ttl_s), "seconds until the key expires"),
                _if_match("write only if the key is at this version (else 412)"),
                header_param("If-None-Match", {"const": "*"}, "write only if the key does not exist (else 412)"),
                idempotency,
            ],
            "requestBody": {"required": False, "content": {"application/octet-stream": {"schema": value_body}}},
            "responses": {
                "200": ok(_write_result(), "updated", _REPLAYABLE),
                "201": ok(_write_result(), "created", _REPLAYABLE),
            }
            | error_responses(400, 412, 421, 422, 504),
        },
        "delete": {
            "operationId": f"deleteKey{ids}",
            "summary": f"Delete a key{named}",
            "parameters": [key_param, _if_match("delete only if the key is at this version (else 412)"), idempotency],
            "responses": {"204": {"description": "deleted", "headers": _REPLAYABLE}}
            | error_responses(400, 404, 412, 421, 422, 504),
        },
    }


def _status() -> Schema:
    nullable_object = {"type": ["object", "null"]}
    lsns = obj({name: LSN_TEXT for name in STATUS_LSNS}, STATUS_LSNS)
    properties: dict[str, Schema] = {
        "name": {"type": "string"},
        "role": {"enum": ["primary", "replica"]},
        "state": {"type": "string"},
        "read_only_reason": {"type": ["string", "null"]},
        "fenced": {"type": ["string", "null"]},
        "timeline": {"type": "integer"},
        "system_identifier": {"type": "string"},
        "fsync": {"enum": ["always", "interval", "off"]},
        "lsn": lsns,
        "keys": {"type": "integer"},
        "revision": {"type": "integer"},
        "last_checkpoint": nullable_object,
        "uptime_s": {"type": "number"},
        "recovery_s": {"type": ["number", "null"]},
        "replicas": {"type": "array", "items": {"type": "object"}},
        "catalog": obj({"damaged": {"type": "integer"}, "documents": {"type": "array"}}, ("damaged",)),
        "replication": nullable_object,
        "synchronous_commit": {"enum": ["local", "remote_write", "remote_apply"]},
    }
    return obj(properties, tuple(properties))


def paths(settings: Settings, policy: AuthPolicy) -> dict[str, dict[str, Any]]:
    min_lsn = min_lsn_header(settings.min_lsn_wait_s)
    listed = obj(
        {
            "key": {"type": "string"},
            "version": {"type": "integer"},
            "value_bytes": {"type": "integer"},
            "expires_at": {"type": "string"},
        },
        ("key", "version", "value_bytes"),
    )
    return {
        "/v1/kv/{key}": _key_operations(settings, ""),
        "/v1/kv/{key}/incr": {
            # The path of the key `{key}/incr` too: the node routes it by method.
            **_key_operations(settings, "/incr"),
            "post": {
                "operationId": "incrKey",
                "summary": "Add `by` to a 64-bit integer value (absent counts as 0), like Redis INCRBY; keeps the TTL",
                "parameters": [
                    _key_param(settings.max_key_bytes),
                    query_param("by", integer(INT64_MIN, INT64_MAX), "the amount to add (default 1)"),
                    idempotency_key_header(settings.idempotency_ttl_s),
                ],
                "responses": {
                    "200": ok(_write_result({"value": integer(INT64_MIN, INT64_MAX)}), "the new value", _REPLAYABLE)
                }
                | error_responses(400, 409, 421, 422, 504),
            },
        },
        "/v1/kv/_sys.{catalog_key}": {
            "parameters": [
                path_param(
                    "catalog_key",
                    key(settings.max_key_bytes, catalog=True, ascii_around=len("_sys.")),
                    "users:<name>, roles:<name>, apikeys:<id> or settings:<jwt_keys|hba|auth|catalog>",
                )
            ],
            "get": {
                "operationId": "getCatalogDocument",
                "summary": "Read a system catalog document (superusers only), like GET /v1/kv/{key}",
                "parameters": [
                    header_param("If-None-Match", {"type": "string"}, "the ETag read before, or *: 304 when it holds"),
                    min_lsn,
                ],
                "responses": {
                    "200": {
                        "description": "the JSON document",
                        "headers": {"ETag": header(_VERSION_ETAG, "the document's version")},
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "304": {"description": "If-None-Match still holds"},
                }
                | error_responses(400, 404, 504),
            },
            "put": {
                "operationId": "putCatalogDocument",
                "summary": "Replace a catalog document (superusers only): a repair tool. The document is checked "
                "like the admin API's (a 400 says what is wrong); no TTL; a user whose password, lock or login "
                "right changes loses its sessions",
                "parameters": [
                    _if_match("write only at this version (else 412)"),
                    header_param("If-None-Match", {"const": "*"}, "create only (else 412)"),
                ],
                "requestBody": json_body({"type": "object"}, "the whole document, as GET returns it"),
                "responses": {
                    "200": ok(_write_result(), "updated", _WRITE_HEADERS),
                    "201": ok(_write_result(), "created", _WRITE_HEADERS),
                }
                | error_responses(400, 409, 412, 421, 504),
            },
            "delete": {
                "operationId": "deleteCatalogDocument",
                "summary": "Delete a catalog document (superusers only): a user takes its API keys along, a role "
                "its memberships; built-in roles, the signing keys and the catalog marker cannot be deleted",
                "parameters": [_if_match("delete only at this version (else 412)")],
                "responses": {"204": {"description": "deleted", "headers": _WRITE_HEADERS}}
                | error_responses(400, 404, 409, 412, 421, 504),
            },
        },
        "/v1/kv": {
            "get": {
                "operationId": "listKeys",
                "summary": "List the keys the caller may read, in order, a page at a time",
                "parameters": [
                    query_param("prefix", {"type": "string"}, "only keys starting with this"),
                    query_param(
                        "after",
                        {"type": "string"},
                        "start after this key: the next_after of a page (a key, or a `~cursor:` token where a "
                        "walk stopped on keys the caller may not read)",
                    ),
                    query_param("limit", integer(1, settings.max_scan_limit), "page size (default 100)"),
                    min_lsn,
                ],
                "responses": {
                    "200": ok(
                        obj(
                            {"keys": {"type": "array", "items": listed}, "next_after": {"type": ["string", "null"]}},
                            ("keys", "next_after"),
                        ),
                        "a page of keys; next_after is null on the last page",
                    )
                }
                | error_responses(400, 504),
            }
        },
        "/v1/txn": {
            "post": {
                "operationId": "transaction",
                "summary": "Apply set/del/check ops atomically, as one WAL record and one version; all or nothing",
                "description": "A set needs `value` (text) or `value_base64`. Keys under _sys. are catalog "
                "documents: a set must be a valid one, users and roles are deleted on their own.",
                "parameters": [idempotency_key_header(settings.idempotency_ttl_s)],
                "requestBody": json_body(_txn_body(settings), "the ops, in order; later ops see earlier ones"),
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "results": {"type": "array", "items": {"type": "object"}},
                                "version": {"type": "integer"},
                                "commit_lsn": LSN_TEXT,
                                "timeline": {"type": "integer"},
                            },
                            ("results", "version", "commit_lsn", "timeline"),
                        ),
                        "each op's result",
                        _TXN_HEADERS,
                    )
                }
                | error_responses(400, 412, 421, 422, 504),
            }
        },
        "/v1/auth/login": {
            "post": {
                "operationId": "login",
                "summary": "Exchange a username and password for a JWT; host rules first (403), repeated failures "
                "lock the name at that address and the address (429), a full hashing queue is a 429 too",
                "requestBody": json_body(
                    obj(
                        {
                            "username": {"type": "string", "minLength": 1, "maxLength": MAX_LOGIN_USERNAME_CHARS},
                            "password": {"type": "string", "maxLength": MAX_LOGIN_PASSWORD_CHARS},
                        },
                        ("username", "password"),
                    ),
                    "the credentials",
                ),
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "token": {"type": "string"},
                                "token_type": {"const": "Bearer"},
                                "expires_at": {"type": "integer"},
                            },
                            ("token", "token_type", "expires_at"),
                        ),
                        f"a token, valid for token_ttl_s = {policy.token_ttl_s} s",
                    )
                }
                | error_responses(400, 401, 403),
            }
        },
        "/v1/status": {
            "get": {
                "operationId": "status",
                "summary": "Role, state, timeline, LSNs, replicas and their lag, last checkpoint",
                "responses": {"200": ok(_status(), "this node's status")},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document, with this node's limits",
                "responses": {"200": ok({"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1")},
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness: the process answers",
                "responses": {"200": ok(obj({"status": {"const": "ok"}}, ("status",)), "alive")},
            }
        },
        "/ready": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: 200 only once recovery is done",
                "responses": {
                    "200": ok(obj({"status": {"const": "ready"}}, ("status",)), "ready"),
                    "503": ok(obj({"status": {"const": "starting"}}, ("status",)), "still recovering"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "the exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
