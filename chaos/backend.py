"""What a backend does for a scenario: run a cluster and inflict faults on its nodes.

A backend owns the nodes' lifecycle and network; it knows nothing of workloads or checks.
Backends: `process` (process.py: kvstored children on 127.0.0.1, partitions through
LinkProxy) and `docker` (compose.py: the compose cluster, through the docker SDK).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

PRIMARY = "p"
ADMIN_USER = "admin"  # the superuser every backend's nodes are initialised with
NODE_NAMES = (PRIMARY, "r1", "r2")


class Corruption(StrEnum):
    TORN_TAIL = "torn-tail"  # the last segment ends mid-record, as after a crash during a write
    FLIPPED_BYTE = "flipped-byte"  # one byte of a record inside the WAL is wrong: bit rot


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The cluster a scenario starts: `nodes[0]` is the primary, the others its replicas."""

    nodes: tuple[str, ...] = NODE_NAMES
    synchronous_replica: str | None = None  # acknowledged only once this replica applied it
    settings: dict[str, str] = field(default_factory=dict)  # KVSTORE_* for every node

    @property
    def primary(self) -> str:
        return self.nodes[0]


@dataclass(frozen=True, slots=True)
class WalDamage:
    """What `corrupt_wal` did, enough to name it in a report and to undo it."""

    kind: Corruption
    segment: str
    lsn: int  # the record damaged, or where the torn tail starts
    offset: int  # in the segment file
    original: bytes  # the bytes that were there (empty: bytes were appended)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "segment": self.segment,
            "lsn": self.lsn,
            "offset": self.offset,
            "original": self.original.hex(),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> WalDamage:
        return cls(
            Corruption(document["kind"]),
            str(document["segment"]),
            int(document["lsn"]),
            int(document["offset"]),
            bytes.fromhex(document["original"]),
        )


class NodeStartFailed(Exception):
    """A node exited while starting; `log` is what it logged during that start."""

    def __init__(self, node: str, exit_code: int | None, log: str) -> None:
        super().__init__(f"{node} exited with {exit_code} while starting")
        self.node = node
        self.exit_code = exit_code
        self.log = log


class Backend(ABC):
    """A cluster under test. Node names are the spec's; every call blocks until done."""

    name: str

    def __init__(self, root: Path) -> None:
        self.root = root  # where a run keeps its files: data directories, logs

    @classmethod
    @abstractmethod
    def prepare(cls) -> None:
        """Once before any run: build what the nodes run from; `RuntimeError` if it cannot run here."""

    @abstractmethod
    def start(self, spec: ClusterSpec) -> None:
        """Start every node and return when all are ready and the replicas follow the primary."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the cluster and release what `start` took; safe to call after a failure."""

    @abstractmethod
    def url(self, node: str) -> str:
        """Where clients reach the node."""

    @abstractmethod
    def credentials(self) -> tuple[str, str]:
        """The superuser's name and password."""

    @abstractmethod
    def kill(self, node: str) -> None:
        """SIGKILL: no shutdown, no final checkpoint."""

    @abstractmethod
    def restart(self, node: str) -> None:
        """Start a stopped node and wait until it is ready; `NodeStartFailed` if it exits."""

    @abstractmethod
    def pause(self, node: str) -> None:
        """SIGSTOP: the node holds its connections but answers nothing."""

    @abstractmethod
    def resume(self, node: str) -> None:
        """SIGCONT."""

    @abstractmethod
    def isolate(self, node: str) -> None:
        """Cut every link between the node and its peers, both ways; clients still reach it.
        (Per node, not per pair: a container can only be taken off its network as a whole.)"""

    @abstractmethod
    def heal(self, node: str) -> None:
        """Restore the links `isolate` cut."""

    @abstractmethod
    def promote(self, node: str) -> dict[str, Any]:
        """Make a replica the primary of a new timeline; returns the node's answer."""

    @abstractmethod
    def rejoin(self, node: str, primary: str) -> dict[str, Any]:
        """Make a fenced former primary a replica of `primary`; returns once it is one."""

    @abstractmethod
    def corrupt_wal(self, node: str, kind: Corruption) -> WalDamage:
        """Damage a stopped node's WAL."""

    @abstractmethod
    def repair_wal(self, node: str, damage: WalDamage) -> None:
        """Put back what `corrupt_wal` changed (an operator restoring the file from a backup)."""

    @abstractmethod
    def log(self, node: str) -> str:
        """Everything the node logged so far, across restarts."""
