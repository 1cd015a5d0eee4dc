"""The HTTP types the API is written against, independent of the server running it.

Handlers take a `Request` and return a `Response` (or a `StreamResponse`); the RSGI
adapter in `rsgi.py` maps them onto granian, and tests call the app directly with a
`Request` they build, so the whole API is testable in-process.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson

from ..catalog import Principal
from ..errors import BadRequest, KvError, MethodNotAllowed, Unauthorized
from ..wal.format import parse_lsn

JSON_HEADERS = [("content-type", "application/json")]
# What the OpenAPI document promises for integer and boolean query parameters, and no more:
# int() alone would also take " 7", "+7", "7_0" and other scripts' digits.
INTEGER_TEXT: Final = re.compile(r"-?[0-9]+")
BOOLEANS: Final = {"true": True, "false": False}
# A version ETag as the node sends it ("42", weak W/"42"), or the bare version.
_VERSION_ETAG: Final = re.compile(r'(?:W/)?"([0-9]+)"|([0-9]+)')
VERSION_ETAG_PATTERN: Final = '^(?:(?:W/)?"[0-9]+"|[0-9]+)$'
# orjson reads integers up to 2**64 - 1 (larger ones become floats): the range of a body's integers.
JSON_INT_MAX: Final = 2**64 - 1
# An LSN as the node writes it (`X/Y`, two 32-bit hex halves) or a decimal byte position.
LSN_PATTERN: Final = r"^(?:[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}|[0-9]{1,18})$"
_LSN: Final = re.compile(LSN_PATTERN)
# What a key may not hold: C0 controls and DEL (NUL included), which terminals, logs and other
# tools act on, and U+FFFD, which is what granian's path decoding makes of invalid UTF-8 (%ff,
# %c0%af): refusing it means one key is never reachable by several spellings. Everything else
# (bidi overrides included) is allowed; kvctl shows such characters escaped.
_KEY_FORBIDDEN_CHARS: Final = r"\x00-\x1f\x7f\ufffd"  # escapes both Python's re and ECMA-262 read
KEY_FORBIDDEN: Final = re.compile(f"[{_KEY_FORBIDDEN_CHARS}]")
KEY_PATTERN: Final = f"^[^{_KEY_FORBIDDEN_CHARS}]*$"  # the same rule, for the OpenAPI document


def check_key_characters(key: str) -> None:
    """A 400 for a key holding a character KEY_FORBIDDEN names (README, "HTTP API")."""
    found = KEY_FORBIDDEN.search(key)
    if found is not None:
        char = found.group()
        why = "invalid UTF-8 in the path (or U+FFFD itself)" if char == "\ufffd" else "a control character"
        raise BadRequest(f"key {key!r} holds {char!r} at {found.start()}: {why} may not appear in a key")


def client_address(client: str) -> str:
    """The client's IP address, from RSGI's `host:port` (the peer of the TCP connection: no
    header such as X-Forwarded-For changes it)."""
    return client.rsplit(":", 1)[0].strip("[]")


def version_from_etag(raw: str, header: str) -> int:
    """The version an If-Match names; a 400 for anything else (never a silent mismatch)."""
    match = _VERSION_ETAG.fullmatch(raw.strip(" \t"))
    if match is None:
        raise BadRequest(f"{header} must be a version ETag such as '\"42\"', got {raw!r}")
    return int(match.group(1) or match.group(2))


def json_integer(value: Any, minimum: int, maximum: int) -> int | None:
    """`value` as an integer in [minimum, maximum], or None when it is not one. Like JSON Schema,
    a number with no fraction (3.0) is an integer; true and false are not."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        return None
    return value


def lsn_from_text(raw: str, what: str) -> int:
    """An LSN a client sent (in a header or the query), in the form the OpenAPI document gives."""
    text = raw.strip(" \t")
    if _LSN.match(text) is None:
        raise BadRequest(f"{what} must be an LSN such as 0/1A2B, got {raw!r}")
    return parse_lsn(text)


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query_string: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    client: str = ""
    server: str = ""  # `host:port` of the listener the connection came to (RSGI's scope.server)
    # Who sent it, when the server authenticated it from the headers before reading the body.
    principal: Principal | None = None
    # The `{name}` parameters of the route's path template, set by the router (routes.py).
    path_params: dict[str, str] = field(default_factory=dict)
    _query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.query_string, keep_blank_values=True)) if self.query_string else {}
        return self._query

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def only_query(self, names: tuple[str, ...]) -> None:
        """A 400 for a query parameter the route does not take: `?tll=5` must not store a value
        without its TTL in silence."""
        unknown = sorted(set(self.query) - set(names))
        if unknown:
            takes = ", ".join(names) if names else "no query parameters"
            raise BadRequest(f"unknown query parameter {unknown[0]!r}; this route takes {takes}")

    @property
    def address(self) -> str:
        return client_address(self.client)

    def json(self) -> Any:
        if not self.body:
            raise BadRequest("request body must be a JSON document")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None

    def query_int(self, name: str, default: int | None, minimum: int, maximum: int) -> int | None:
        raw = self.query.get(name)
        if raw is None:
            return default
        if INTEGER_TEXT.fullmatch(raw) is None:
            raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}")
        value = int(raw)
        if not minimum <= value <= maximum:
            raise BadRequest(f"query parameter {name!r} must be between {minimum} and {maximum}, got {value}")
        return value

    def query_bool(self, name: str) -> bool:
        """`true` or `false`; absent is false. Anything else is refused rather than read as false."""
        raw = self.query.get(name)
        if raw is None:
            return False
        if raw not in BOOLEANS:
            raise BadRequest(f"query parameter {name!r} must be true or false, got {raw!r}")
        return BOOLEANS[raw]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class StreamResponse:
    """A long-lived chunked response; the adapter stops iterating when the client leaves."""

    status: int
    chunks: AsyncGenerator[bytes, None]  # closed when the client leaves
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(document: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps(document), JSON_HEADERS + (headers or []))


def error_response(error: KvError) -> Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body.update(error.details)
    headers = []
    if isinstance(error, Unauthorized):
        headers.append(("www-authenticate", 'Bearer realm="kvstore"'))  # RFC 9110: name the scheme
    if isinstance(error, MethodNotAllowed):
        headers.append(("allow", ", ".join(error.allowed)))
    if "retry_after_s" in error.details:
        headers.append(("retry-after", str(error.details["retry_after_s"])))
    return json_response({"error": body}, error.status, headers)
