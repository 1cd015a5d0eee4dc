"""The `control` file: the node's pg_control. Small JSON, checksummed, replaced atomically.

It says where recovery starts (redo LSN and snapshot), which timeline the node is on,
the system identifier that ties a data directory (and later its replicas) together,
and whether the last shutdown was clean.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .fsutil import atomic_write
from .wal.format import crc32c

CONTROL_FORMAT: Final = 1
CATALOG_VERSION: Final = 1
STATE_RUNNING: Final = "in production"
STATE_SHUT_DOWN: Final = "shut down"
STATE_NEEDS_BASE_BACKUP: Final = "needs base backup"  # a replica whose data must come from its primary again
ROLE_PRIMARY: Final = "primary"
ROLE_REPLICA: Final = "replica"


class ControlError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Control:
    system_identifier: int
    timeline: int
    redo_lsn: int
    snapshot: str | None
    checkpoint_at_ms: int
    state: str
    catalog_version: int = CATALOG_VERSION
    format: int = CONTROL_FORMAT
    role: str = ROLE_PRIMARY
    primary_url: str | None = None  # a replica's primary, once set by a base backup or a rejoin
    fenced_reason: str | None = None  # a primary that learned of a newer timeline: writes stay refused
    consistent_lsn: int = 0  # the snapshot holds nothing newer: replaying to here makes it consistent
    replica_start_lsn: int | None = (
        None  # a new replica without WAL yet streams from here (its primary's segment start)
    )

    def replace(self, **changes: Any) -> Control:
        return dataclasses.replace(self, **changes)


def _body(control: Control) -> bytes:
    return json.dumps(dataclasses.asdict(control), sort_keys=True).encode()


def write_control(path: Path, control: Control) -> None:
    body = _body(control)
    document = {"control": json.loads(body), "crc32c": crc32c(body)}
    atomic_write(path, json.dumps(document, indent=2).encode() + b"\n")


def read_control(path: Path) -> Control:
    try:
        document = json.loads(path.read_bytes())
        control = Control(**document["control"])
    except FileNotFoundError:
        raise ControlError(f"{path} is missing: not a data directory, or it was damaged") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ControlError(f"{path} is not a valid control file: {exc}") from None
    if crc32c(_body(control)) != document.get("crc32c"):
        raise ControlError(f"{path}: checksum mismatch, the control file is damaged")
    if control.format != CONTROL_FORMAT:
        raise ControlError(f"{path}: control format {control.format}, this build reads {CONTROL_FORMAT}")
    return control
