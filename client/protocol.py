"""The wire format of the node's API, without any I/O: what to send for each call and what
its answer means. `Client` and `AsyncClient` share it and differ only in how they send.

A `Call` says where it may go (the primary, or any node for reads when asked), whether a
re-send after a lost answer is safe (reads; writes with a precondition or a plain SET;
INCR, DELETE and transactions because they carry an `Idempotency-Key` the primary
remembers), and which statuses are answers rather than errors.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from .errors import BadRequest, ClientError, error_for
from .models import Event, Item, KeyInfo, TxnOp, TxnResult, WriteResult

IDEMPOTENCY_HEADER = "idempotency-key"
LOGIN_TIMEOUT_S = 30.0  # a password check queues behind others on a busy node
MIN_LSN_HEADER = "x-kv-min-lsn"


@dataclass(slots=True)
class Call:
    method: str
    path: str
    ok: tuple[int, ...]
    write: bool = False
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    retry_safe: bool = True  # a re-send after a lost answer cannot do the write twice
    timeout_s: float | None = None  # longer than the client's (a checkpoint of a big store)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    url: str

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def error(self) -> ClientError:
        return error_for(self.status, self.json(), self.body[:400].decode("utf-8", "replace"), self.url)

    def document(self) -> dict[str, Any]:
        document = self.json()
        if not isinstance(document, dict):
            raise ClientError(f"{self.url} answered HTTP {self.status} without a JSON object", "bad_response")
        return document


def parse_lsn(text: str) -> int:
    """PostgreSQL's `X/Y` LSN spelling as a number, for comparing positions."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def key_path(key: str) -> str:
    if not key:
        raise BadRequest("key must not be empty", "bad_request")
    return f"/v1/kv/{quote(key, safe='')}"


def _json_body(document: Any) -> bytes:
    return orjson.dumps(document)


def _idempotent(call: Call) -> Call:
    call.headers[IDEMPOTENCY_HEADER] = uuid.uuid4().hex
    return call


def _preconditions(call: Call, if_version: int | None, if_absent: bool) -> Call:
    if if_version is not None:
        call.headers["if-match"] = f'"{if_version}"'
    if if_absent:
        call.headers["if-none-match"] = "*"
    return call


# -- calls -------------------------------------------------------------------------------


def get(key: str) -> Call:
    return Call("GET", key_path(key), (200, 404))


def put(key: str, value: bytes | str, ttl: int | None, if_version: int | None, if_absent: bool) -> Call:
    data = value.encode() if isinstance(value, str) else value
    call = Call("PUT", key_path(key), (200, 201), write=True, body=data)
    call.headers["content-type"] = "application/octet-stream"
    if ttl is not None:
        call.params["ttl"] = str(ttl)
    _preconditions(call, if_version, if_absent)
    # A plain SET sent twice leaves what one leaves; a conditional one would answer 412 the
    # second time, so the node must recognise it.
    return _idempotent(call) if if_version is not None or if_absent else call


def delete(key: str, if_version: int | None) -> Call:
    return _idempotent(_preconditions(Call("DELETE", key_path(key), (204, 404), write=True), if_version, False))


def incr(key: str, by: int) -> Call:
    return _idempotent(Call("POST", key_path(key) + "/incr", (200,), write=True, params={"by": str(by)}))


def txn(ops: list[TxnOp]) -> Call:
    body = _json_body({"ops": [op.to_json() for op in ops]})
    call = Call("POST", "/v1/txn", (200,), write=True, body=body, headers={"content-type": "application/json"})
    return _idempotent(call)


def keys(prefix: str, after: str | None, limit: int) -> Call:
    params = {"prefix": prefix, "limit": str(limit)}
    if after is not None:
        params["after"] = after
    return Call("GET", "/v1/kv", (200,), params=params)


def status() -> Call:
    return Call("GET", "/v1/status", (200,))


def login(username: str, password: str) -> Call:
    body = _json_body({"username": username, "password": password})
    headers = {"content-type": "application/json"}
    return Call("POST", "/v1/auth/login", (200,), body=body, headers=headers, timeout_s=LOGIN_TIMEOUT_S)


def watch(prefix: str, from_lsn: str | None) -> Call:
    params = {"prefix": prefix}
    if from_lsn is not None:
        params["from_lsn"] = from_lsn
    return Call("GET", "/v1/watch", (200,), params=params)


# -- answers -----------------------------------------------------------------------------


def item(key: str, answer: Answer) -> Item | None:
    if answer.status == 404:
        return None
    etag = answer.headers.get("etag", "")
    return Item(
        key,
        answer.body,
        int(etag.removeprefix("W/").strip('"') or 0),
        answer.headers.get("x-kv-expires-at"),
        answer.headers.get("x-kv-lsn"),
    )


def written(answer: Answer) -> WriteResult:
    document = answer.document()
    return WriteResult(int(document["version"]), str(document["commit_lsn"]), answer.status == 201)


def deleted(answer: Answer) -> bool:
    return answer.status == 204


def incremented(answer: Answer) -> int:
    return int(answer.document()["value"])


def txn_result(answer: Answer) -> TxnResult:
    document = answer.document()
    return TxnResult(list(document["results"]), int(document["version"]), str(document["commit_lsn"]))


def key_page(answer: Answer) -> tuple[list[KeyInfo], str | None]:
    document = answer.document()
    infos = [
        KeyInfo(str(entry["key"]), int(entry["version"]), int(entry["value_bytes"]), entry.get("expires_at"))
        for entry in document["keys"]
    ]
    return infos, document.get("next_after")


def commit_lsn(answer: Answer) -> str | None:
    """The LSN a write committed at, from its answer (for sessions)."""
    return answer.headers.get("x-kv-commit-lsn")


@dataclass(frozen=True, slots=True)
class Progress:
    """The node has sent every change up to `lsn`."""

    lsn: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The node ended the watch (stopping, a slow reader, compacted WAL) and says why."""

    reason: str

    @property
    def compacted(self) -> bool:
        return self.reason.startswith("compacted")


def watch_line(line: bytes) -> Event | Progress | Cancelled | None:
    """A watch stream's line; None for a blank keepalive."""
    if not line.strip():
        return None
    document = orjson.loads(line)
    kind = document.get("type")
    if kind == "progress":
        return Progress(str(document["lsn"]))
    if kind == "cancelled":
        return Cancelled(str(document.get("reason") or "cancelled"))
    value = document.get("value_base64")
    return Event(
        str(kind),
        str(document["key"]),
        None if value is None else base64.b64decode(value),
        int(document.get("version") or 0),
        document.get("expires_at"),
        str(document["lsn"]),
    )
