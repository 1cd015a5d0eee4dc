"""`GET /v1/status`: one node's role, state, LSNs, checkpoint, replicas and catalog health."""

from __future__ import annotations

import time
from typing import Any, Protocol

from kvstore.replication.roles import Roles

from .catalog_health import CatalogHealth
from .checkpoint import Checkpointer
from .config import Settings
from .engine import Engine
from .wal.format import format_lsn


class StatusSource(Protocol):
    settings: Settings
    engine: Engine
    checkpointer: Checkpointer
    catalog_health: CatalogHealth
    roles: Roles
    started_at: float
    recovery_seconds: float | None


def status_document(node: StatusSource) -> dict[str, Any]:
    engine, control, roles = node.engine, node.checkpointer.control, node.roles
    writer = engine.writer
    assert writer is not None
    last = node.checkpointer.last
    if roles.is_replica:
        state = roles.receiver.status.state if roles.receiver else "replica"
    elif roles.fenced_reason:
        state = "fenced"
    else:
        state = "read-only" if engine.read_only_reason else "running"
    return {
        "name": node.settings.node_name,
        "role": "replica" if roles.is_replica else "primary",
        "state": state,
        "read_only_reason": engine.read_only_reason,
        "fenced": roles.fenced_reason,
        "timeline": control.timeline,
        "system_identifier": str(control.system_identifier),
        "fsync": writer.policy.value,
        "lsn": {
            # PostgreSQL's names: inserted (appended), written (per the fsync policy: fsynced
            # under always), flushed (fsynced: durable), committed (acknowledged and readable),
            # applied (in the store), redo (where recovery would start).
            "insert_lsn": format_lsn(writer.end_lsn),
            "write_lsn": format_lsn(writer.write_lsn),
            "flush_lsn": format_lsn(writer.flush_lsn),
            "commit_lsn": format_lsn(engine.committed_lsn),
            "apply_lsn": format_lsn(engine.store.applied_lsn),
            "redo_lsn": format_lsn(control.redo_lsn),
        },
        "keys": len(engine.store),
        "revision": engine.store.revision,
        "last_checkpoint": None
        if last is None
        else {"snapshot": last.snapshot, "redo_lsn": format_lsn(last.redo_lsn), "seconds": round(last.seconds, 3)},
        "uptime_s": round(time.time() - node.started_at, 1),
        "recovery_s": None if node.recovery_seconds is None else round(node.recovery_seconds, 3),
        "replicas": roles.primary.slots.describe(engine.write_lsn, time.time()) if roles.primary else [],
        "catalog": node.catalog_health.describe(),
        "replication": roles.receiver.describe() if roles.receiver else None,
        "synchronous_commit": node.settings.synchronous_commit,
        "archive": _archive(node),
    }


def _archive(node: StatusSource) -> dict[str, Any] | None:
    archiver, url = node.roles.archiver, node.settings.archive_url
    if archiver is not None and not node.roles.fenced_reason:
        return archiver.describe()
    if url is None:
        return None
    state = "fenced: archives nothing" if node.roles.fenced_reason else "replica: archives once promoted"
    return {"url": url, "state": state}
