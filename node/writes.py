"""The vocabulary of writes: what a transaction op is, what a write answers, and the
preconditions (if_version, if_absent) a write is checked against. Pure: no I/O."""

from __future__ import annotations

import time
from typing import NamedTuple

from .errors import PreconditionFailed
from .store import VERSION, Entry

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class WriteResult(NamedTuple):  # a NamedTuple: built on every write, ~5x cheaper than a frozen dataclass
    version: int
    commit_lsn: int
    created: bool = False


class TxnOp(NamedTuple):
    """One operation of a transaction; `check` only asserts its preconditions."""

    kind: str  # "set" | "del" | "check"
    key: str
    value: bytes = b""
    ttl_s: int | None = None
    if_version: int | None = None
    if_absent: bool = False


def check_preconditions(key: str, current: Entry | None, if_version: int | None, if_absent: bool) -> None:
    if if_absent and current is not None:
        raise PreconditionFailed(f"key {key!r} already exists (version {current[VERSION]})", key=key)
    if if_version is not None:
        if current is None:
            raise PreconditionFailed(f"key {key!r} does not exist; expected version {if_version}", key=key)
        if current[VERSION] != if_version:
            raise PreconditionFailed(
                f"key {key!r} is at version {current[VERSION]}, not {if_version}", key=key, version=current[VERSION]
            )
