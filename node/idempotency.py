"""Idempotency-Key: a write's first answer, remembered with the write so a retry gets it again.

A write sent with `Idempotency-Key: K` by user U is logged as one TXN record holding the
write's own changes and `_sys.idempotency:U:K`, whose value is the answer the client got
(see `document`) and which expires `idempotency_ttl_s` after the write. So the answer
commits with the write or not at all, and is replicated, snapshotted, recovered and expired
(by the TTL expirer's DEL) like any key: a retry sent to a promoted replica finds it too.

The answer states its own commit LSN, which is the end of the record holding it: the record
is built once with a placeholder of the same width to learn its size, hence where it ends
(`WalWriter.end_lsn_after`), then with that LSN.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, NamedTuple, TypeVar

import orjson

from . import records
from .errors import BadRequest, KvError
from .store import Entry
from .wal.format import format_lsn
from .wal.writer import WalWriter

PREFIX: Final = "_sys.idempotency:"
HEADER: Final = "idempotency-key"  # request header (lower-case, as the HTTP layer names them)
REPLAYED_HEADER: Final = ("idempotent-replayed", "true")
COMMIT_LSN_HEADER: Final = "x-kv-commit-lsn"
MAX_KEY_CHARS: Final = 128
KEY_PATTERN: Final = rf"^[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}$"  # visible ASCII: a UUID, a ULID, ...
_KEY: Final = re.compile(KEY_PATTERN)
_LSN_DIGITS: Final = 16  # the stored commit LSN: fixed width, so the record's size does not depend on it
_LSN_TEXT: Final = re.compile(f"[0-9A-F]{{{_LSN_DIGITS}}}")
_FIELDS: Final = frozenset({"method", "path", "fingerprint", "status", "body", "headers", "commit_lsn"})

T = TypeVar("T")


class KeyReused(KvError):
    """The key names a remembered request other than this one (Stripe and the IETF draft: 422)."""

    status = 422
    code = "idempotency_key_reused"


class Answer(NamedTuple):
    """What a write answers: status, JSON body (None: no body) and headers besides content-type."""

    status: int
    body: dict[str, Any] | None
    headers: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Remember(Generic[T]):
    """A write to remember under `key`: `answer` turns the engine's outcome of the write (its
    WriteResult's commit LSN not yet known, 0) into what the client is answered."""

    key: str
    request: dict[str, str]  # method, path, fingerprint
    created_at_ms: int
    expires_at_ms: int
    answer: Callable[[T], Answer]

    def log(
        self,
        log: Callable[[records.Record, list[tuple[str, Entry | None]]], int],
        writer: WalWriter | None,
        ops: list[records.Record],
        changes: list[tuple[str, Entry | None]],
        version: int,
        outcome: T,
    ) -> int:
        """Log the write's `ops` and this answer in one TXN record with `log` (the engine's);
        returns its end LSN. The answer is an entry of version `version`, the write's."""
        assert writer is not None, "engine used before a WAL writer was attached"
        document = self.document(self.answer(outcome))
        probe = self._entry(document, 0, version)
        lsn = writer.end_lsn_after(
            len(records.encode(records.txn_record([*ops, records.set_record(self.key, *probe)])))
        )
        entry = self._entry(document, lsn, version)
        logged = log(records.txn_record([*ops, records.set_record(self.key, *entry)]), [*changes, (self.key, entry)])
        assert logged == lsn, f"the answer states commit LSN {lsn}, but its record ends at {logged}"
        return lsn

    def document(self, answer: Answer) -> dict[str, Any]:
        """The stored answer, its commit LSN left out (it goes in `commit_lsn`, fixed width)."""
        body = answer.body
        if body is not None and "commit_lsn" in body:
            body = {**body, "commit_lsn": None}
        headers = [[name, value] for name, value in answer.headers if name != COMMIT_LSN_HEADER]
        return {**self.request, "status": answer.status, "body": body, "headers": headers}

    def _entry(self, document: dict[str, Any], lsn: int, version: int) -> Entry:
        # orjson's output holds a 4 KiB allocation whatever its length (orjson 3.x; measured
        # by RSS): an answer kept for a day is copied to its own size, ~270 bytes.
        value = bytes(memoryview(orjson.dumps({**document, "commit_lsn": f"{lsn:0{_LSN_DIGITS}X}"})))
        return (value, version, self.created_at_ms, self.expires_at_ms)


def parse_key(raw: str) -> str:
    if _KEY.fullmatch(raw) is None:
        raise BadRequest(
            f"Idempotency-Key must be 1-{MAX_KEY_CHARS} visible ASCII characters, no spaces (a UUID is a good "
            f"one), got {len(raw)} characters{'' if raw.isascii() and raw.isprintable() else ', some of other kinds'}"
        )
    return raw


def store_key(user: str, key: str) -> str:
    """Where user `user`'s answer for `key` is kept (a user name has no ':', so no two collide)."""
    return f"{PREFIX}{user}:{key}"


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """What makes a retry the same request: a key reused for another one is refused."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), body):
        digest.update(b"%d:" % len(part))  # length-prefixed: no two requests hash the same parts
        digest.update(part)
    return digest.hexdigest()


def check_document(document: dict[str, Any]) -> None:
    """A stored answer's shape; ValueError says what is wrong."""
    if set(document) != _FIELDS:
        raise ValueError(f"an idempotency answer has the fields {', '.join(sorted(_FIELDS))}")
    for field in ("method", "path", "fingerprint", "commit_lsn"):
        if not isinstance(document[field], str):
            raise ValueError(f"{field} must be text")
    if not isinstance(document["status"], int) or not 200 <= document["status"] < 300:
        raise ValueError(f"status must be a 2xx status, got {document['status']!r}")
    if document["body"] is not None and not isinstance(document["body"], dict):
        raise ValueError("body must be a JSON object or null")
    headers = document["headers"]
    if not isinstance(headers, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair) for pair in headers
    ):
        raise ValueError("headers must be a list of [name, value] pairs")
    if _LSN_TEXT.fullmatch(document["commit_lsn"]) is None:
        raise ValueError(f"commit_lsn must be {_LSN_DIGITS} upper-case hex digits")


def replayed(document: dict[str, Any]) -> Answer:
    """The first answer again, from its checked document, with its commit LSN filled in."""
    commit_lsn = format_lsn(int(document["commit_lsn"], 16))
    body = document["body"]
    if body is not None and "commit_lsn" in body:
        body = {**body, "commit_lsn": commit_lsn}
    headers = [(name, value) for name, value in document["headers"]]
    headers += [(COMMIT_LSN_HEADER, commit_lsn), REPLAYED_HEADER]
    return Answer(document["status"], body, headers)
