"""What a run records: every client operation and every injected fault, on one clock.

Times are seconds since the run started (monotonic), so the checkers and the report agree.
Pure data plus a thread-safe recorder; no I/O.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

# Registers: a few hot keys written with unique values and read back, checked for
# linearizability. Everything else is written once, checked for durability.
REGISTER_PREFIX = "reg:"
DURABLE_PREFIX = "dur:"


class Outcome(StrEnum):
    OK = "ok"  # acknowledged (a write) or answered (a read)
    FAILED = "failed"  # definitely had no effect: refused before or without executing
    UNKNOWN = "unknown"  # may or may not have taken effect (timeout, connection lost, 5xx)


class OpKind(StrEnum):
    WRITE = "write"
    READ = "read"


@dataclass(frozen=True, slots=True)
class Op:
    id: int
    client: int
    kind: OpKind
    key: str
    value: str | None  # the value written, or read (None: the key was absent)
    start_s: float
    end_s: float
    outcome: Outcome
    node: str = ""
    commit_lsn: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(slots=True)
class Fault:
    kind: str  # kill, restart, pause, partition, promote, rejoin, corrupt-wal, ...
    node: str
    start_s: float
    end_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Clock:
    """Seconds since the run started."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._started


class History:
    """Appended to by every workload thread and the scenario; read once the load has stopped."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ops: list[Op] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._next_id = 0

    def record(self, **fields: Any) -> Op:
        with self._lock:
            op = Op(id=self._next_id, **fields)
            self._next_id += 1
            self.ops.append(op)
        return op

    def fault(self, kind: str, node: str, **detail: Any) -> Fault:
        fault = Fault(kind, node, self.clock.now(), detail=detail)
        with self._lock:
            self.faults.append(fault)
        return fault
