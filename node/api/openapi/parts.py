"""Building blocks of the OpenAPI document: schemas, parameters and responses shared by its paths.

Pure: every function returns a fresh JSON-able value. The limits come in as arguments (the
node's settings), so the document says exactly what this node accepts.
"""

from __future__ import annotations

from typing import Any, Final

from ... import idempotency
from ...catalog_documents import NAME_PATTERN
from ..http import KEY_PATTERN, LSN_PATTERN

Schema = dict[str, Any]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

LSN_TEXT: Final[Schema] = {"type": "string", "pattern": "^[0-9A-F]{1,8}/[0-9A-F]{1,8}$", "examples": ["0/1A2B"]}
NAME: Final[Schema] = {"type": "string", "pattern": NAME_PATTERN.pattern}
NULLABLE_TEXT: Final[Schema] = {"type": ["string", "null"]}
# A catalog change is a write: refused on a replica (421), bounded by synchronous commit (504).
CATALOG_WRITES: Final = (421, 504)
# ip_network(strict=False) reads more spellings (netmasks, scoped IPv6); these are the usual ones.
_IPV4 = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    f"(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|(?:{_H}:){{1,6}}:{_H}|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    f"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    f"|{_H}:(?::{_H}){{1,6}}|:(?:(?::{_H}){{1,7}}|:))"
)
CIDR: Final[Schema] = {
    "type": "string",
    "pattern": rf"^(?:{_IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?|{_IPV6}(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$",
    "examples": ["10.0.0.0/8"],
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), *, closed: bool = False) -> Schema:
    """An object schema; `closed` where the node refuses fields it does not know."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def integer(minimum: int, maximum: int) -> Schema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


# (highest code point, UTF-8 bytes of each character up to it), narrowest first.
_WIDTHS: Final = ((0x7F, 1), (0x7FF, 2), (0xFFFF, 3), (0x10FFFF, 4))


def utf8_text(max_bytes: int, *, min_chars: int = 0, ascii_around: int = 0) -> Schema:
    """Text of at most `max_bytes` UTF-8 bytes. JSON Schema counts characters, not bytes, so this
    is the sound side of it, one branch a UTF-8 width: max_bytes characters of ASCII, half that up
    to U+07FF, a third in the Basic Multilingual Plane, a quarter of any text. Longer text mixing
    widths may fit too (the node counts bytes). `ascii_around`: ASCII the node adds around it."""
    branches = []
    for highest, width in _WIDTHS:
        branch: Schema = {"maxLength": (max_bytes - ascii_around) // width}
        if highest < _WIDTHS[-1][0]:
            branch["pattern"] = f"^[\\x00-\\u{highest:04X}]*$"
        branches.append(branch)
    return {"type": "string", "minLength": min_chars, "anyOf": branches}


def key(max_key_bytes: int, *, catalog: bool, ascii_around: int = 0) -> Schema:
    """A key; `catalog=False` leaves out the `_sys.` keys of the system catalogs, whose values
    are JSON documents checked by kind (documented under /v1/kv/_sys.{catalog_key})."""
    schema = utf8_text(max_key_bytes, min_chars=1, ascii_around=ascii_around)
    schema["pattern"] = KEY_PATTERN  # no control characters, no U+FFFD (README, "HTTP API")
    if not catalog:
        schema["not"] = {"pattern": "^_sys\\."}
    return schema


def path_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def query_param(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def header_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


def idempotency_key_header(idempotency_ttl_s: int) -> Schema:
    return header_param(
        "Idempotency-Key",
        {"type": "string", "pattern": idempotency.KEY_PATTERN},
        "a key of the caller's choosing (a UUID) that makes a retry safe: the first answer is "
        f"remembered for idempotency_ttl_s = {idempotency_ttl_s} s and a request with the same key gets it "
        "again (Idempotent-Replayed: true) without executing; a different request with it is a 422",
    )


def decoding_to_at_most(max_bytes: int) -> Schema:
    """Padded base64 of at most `max_bytes` bytes: 4 characters carry 3 bytes, and a last group
    ending in `==` carries 1, in `=` 2 (so the bound is exact, whatever max_bytes % 3 is)."""
    groups, rest = divmod(max_bytes, 3)
    if rest == 0:
        return {"maxLength": 4 * groups}
    padded = "==$" if rest == 1 else "=$"
    return {"anyOf": [{"maxLength": 4 * groups}, {"maxLength": 4 * groups + 4, "pattern": padded}]}


def min_lsn_header(min_lsn_wait_s: float) -> Schema:
    return header_param(
        "X-KV-Min-LSN",
        {"type": "string", "pattern": LSN_PATTERN},
        "read your writes: wait (at most min_lsn_wait_s = "
        f"{min_lsn_wait_s} s, then 504) until this node has applied the commit LSN a write answered; "
        "on a primary an LSN beyond its WAL end is a 400 (lsn_beyond_wal_end)",
    )


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def json_body(schema: Schema, description: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "description": description, "content": json_content(schema)}


def ok(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": json_content(schema)}
    if headers:
        response["headers"] = headers
    return response


def header(schema: Schema, description: str, *, required: bool = True) -> dict[str, Any]:
    return {"schema": schema, "description": description, "required": required}


IDEMPOTENT_REPLAYED: Final = header(
    {"const": "true"}, "the first answer to this Idempotency-Key, sent again: nothing was written", required=False
)


# -- errors -----------------------------------------------------------------------------------

ERRORS: Final[dict[int, str]] = {
    400: "bad input: the message says which part and why",
    401: "missing, malformed, expired or revoked credentials (WWW-Authenticate: Bearer)",
    403: "not allowed: no grant for this, or a host rule rejects the caller's address",
    404: "not found",
    408: "the request body did not arrive within http_body_timeout_ms; the connection closes",
    409: "conflicts with the current state: exists already, changed meanwhile, or a damaged catalog document",
    410: "compacted: the WAL no longer reaches back to from_lsn (oldest_lsn says how far it does)",
    411: "a request body needs Content-Length (chunked bodies are refused)",
    412: "a precondition (If-Match, If-None-Match: *, if_version, if_absent) does not hold",
    413: "too large: the body, a value or a transaction is above its limit",
    421: "this node does not take writes: a replica (the message names its primary) or a fenced primary",
    422: "idempotency_key_reused: the Idempotency-Key names another request (method, path, query, "
    "If-Match/If-None-Match or body differ) within idempotency_ttl_s",
    429: "too many requests in flight (max_requests_in_flight, max_requests_in_flight_per_address), a login "
    "lockout or slowdown, max_watchers watch streams, or a full password hashing queue (login_queue_max); Retry-After says when to try again",
    500: "internal error; see the node log",
    502: "upstream_failed: a service the node called for the request (an object store) refused or failed",
    503: "the node is still recovering, or its WAL failed, or request bodies in flight are at "
    "max_body_bytes_in_flight (Retry-After)",
    504: "a bounded wait ran out: X-KV-Min-LSN not applied in time, or synchronous replicas did not "
    "confirm a commit (it is committed here: outcome unknown)",
}


def error_responses(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in codes}


def components() -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code, text in ERRORS.items():
        response: dict[str, Any] = {"description": text, "content": json_content(ref("Error"))}
        if code == 401:
            response["headers"] = {"WWW-Authenticate": header({"type": "string"}, 'Bearer realm="kvstore"')}
        if code in (429, 503):
            response["headers"] = {
                "Retry-After": header({"type": "string", "pattern": "^[0-9]+$"}, "seconds", required=False)
            }
        responses[f"E{code}"] = response
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a JWT from POST /v1/auth/login, or an API key kv_<id>_<secret>",
            }
        },
        "schemas": {
            "Error": obj(
                {
                    "error": obj(
                        {"code": {"type": "string"}, "message": {"type": "string", "minLength": 1}}, ("code", "message")
                    )
                },
                ("error",),
            )
        },
        "responses": responses,
    }


def finish(paths: dict[str, dict[str, Any]], open_operations: set[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Add the statuses any operation may answer: 429 (in-flight limit, before routing) and 500;
    401 and 403 (credentials, host rules) where authentication is needed, 503 (recovering, WAL
    failed) past the probes, 411, 413 and 408 (body timeout) wherever the method carries a body;
    503 there too (body memory in flight)."""
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            codes = {429, 500}
            if (method.upper(), path) in open_operations:
                operation["security"] = []
            else:
                codes |= {401, 403}
            if path not in ("/health", "/ready", "/metrics"):
                codes.add(503)
            if method in ("put", "post", "patch"):
                codes |= {408, 411, 413, 503}
            responses = operation["responses"]
            for code in sorted(codes):
                responses.setdefault(str(code), {"$ref": f"#/components/responses/E{code}"})
            operation["responses"] = dict(sorted(responses.items()))
    return paths
