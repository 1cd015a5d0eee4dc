"""The HTTP types the API is written against, independent of the server running it.

Handlers take a `Request` and return a `Response` (or a `StreamResponse`); the RSGI
adapter in `rsgi.py` maps them onto granian, and tests call the app directly with a
`Request` they build, so the whole API is testable in-process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..errors import BadRequest, KvError, Unauthorized

JSON_HEADERS = [("content-type", "application/json")]


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query_string: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    client: str = ""
    _query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.query_string, keep_blank_values=True)) if self.query_string else {}
        return self._query

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def address(self) -> str:
        """The client's IP address, from RSGI's `host:port`."""
        return self.client.rsplit(":", 1)[0].strip("[]")

    def json(self) -> Any:
        if not self.body:
            raise BadRequest("request body must be a JSON document")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None

    def query_int(self, name: str, default: int | None, minimum: int, maximum: int) -> int | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise BadRequest(f"query parameter {name!r} must be between {minimum} and {maximum}, got {value}")
        return value


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class StreamResponse:
    """A long-lived chunked response; the adapter stops iterating when the client leaves."""

    status: int
    chunks: AsyncIterator[bytes]
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
    if "retry_after_s" in error.details:
        headers.append(("retry-after", str(error.details["retry_after_s"])))
    return json_response({"error": body}, error.status, headers)
