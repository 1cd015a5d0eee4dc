"""What client calls answer, and the operations a transaction is built from."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Item:
    """A key's value as read. `lsn`: the position the node had applied when it answered (a
    watch from it misses nothing that came after the read)."""

    key: str
    value: bytes
    version: int
    expires_at: str | None
    lsn: str | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A committed write: the key's new version and the commit LSN (for read-your-writes)."""

    version: int
    commit_lsn: str
    created: bool = False


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key of a listing: its version, value size and expiry, not its value."""

    key: str
    version: int
    value_bytes: int
    expires_at: str | None


@dataclass(frozen=True, slots=True)
class TxnResult:
    """A committed transaction: one result per op (in order), the version and commit LSN."""

    results: list[dict[str, Any]]
    version: int
    commit_lsn: str


@dataclass(frozen=True, slots=True)
class Event:
    """A committed change from a watch: `type` is set, del or expire (value None but for set);
    a transaction's changes share one `lsn`."""

    type: str
    key: str
    value: bytes | None
    version: int
    expires_at: str | None
    lsn: str


# -- transaction operations ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Set:
    key: str
    value: bytes | str
    ttl: int | None = None
    if_version: int | None = None
    if_absent: bool = False

    def to_json(self) -> dict[str, Any]:
        data = self.value.encode() if isinstance(self.value, str) else self.value
        op: dict[str, Any] = {"op": "set", "key": self.key, "value_base64": base64.b64encode(data).decode("ascii")}
        return _with_preconditions(op, self.if_version, self.if_absent, ttl=self.ttl)


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    if_version: int | None = None

    def to_json(self) -> dict[str, Any]:
        return _with_preconditions({"op": "del", "key": self.key}, self.if_version, False)


@dataclass(frozen=True, slots=True)
class Check:
    """Asserts without writing: the key is at `if_version`, or (`if_absent`) does not exist."""

    key: str
    if_version: int | None = None
    if_absent: bool = False

    def to_json(self) -> dict[str, Any]:
        return _with_preconditions({"op": "check", "key": self.key}, self.if_version, self.if_absent)


TxnOp = Set | Delete | Check


def _with_preconditions(
    op: dict[str, Any], if_version: int | None, if_absent: bool, ttl: int | None = None
) -> dict[str, Any]:
    if if_version is not None:
        op["if_version"] = if_version
    if if_absent:
        op["if_absent"] = True
    if ttl is not None:
        op["ttl"] = ttl
    return op


@dataclass(slots=True)
class Credentials:
    """A token or API key as given, or a user name and password to log in with."""

    token: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
