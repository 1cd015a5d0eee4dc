"""Admin routes under /v1/admin/: checkpoints, snapshots, WAL inspection. Superuser only."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator
from typing import Any, Protocol

import orjson

from .. import records
from ..catalog import Principal
from ..checkpoint import Checkpointer, CheckpointResult
from ..datadir import DataDir
from ..engine import Engine
from ..wal.format import format_lsn, parse_lsn
from ..wal.reader import WalCorruption, WalScan
from ..wal.segments import list_segments
from ..wal_cursor import WalCursor
from .http import Request, Response, StreamResponse, json_response, lsn_from_text
from .routes import Route, superuser

WAL_TAIL_BATCH_RECORDS = 1000
WAL_TAIL_KEEPALIVE_S = 5.0
WAL_RECORDS_MAX = 100_000


class AdminNode(Protocol):
    engine: Engine
    datadir: DataDir
    checkpointer: Checkpointer
    stopping: asyncio.Event


def checkpoint_document(result: CheckpointResult) -> dict[str, Any]:
    return {
        "redo_lsn": format_lsn(result.redo_lsn),
        "snapshot": result.snapshot,
        "entries": result.entries,
        "snapshot_bytes": result.snapshot_bytes,
        "segments_removed": result.segments_removed,
        "seconds": round(result.seconds, 3),
    }


def routes(node: AdminNode) -> list[Route]:
    async def checkpoint(request: Request, principal: Principal) -> Response:
        result = await node.checkpointer.checkpoint("requested")
        return json_response(checkpoint_document(result))

    async def list_snapshots(request: Request, principal: Principal) -> Response:
        current = node.checkpointer.control.snapshot
        snapshots = [
            {"name": path.name, "bytes": path.stat().st_size, "current": path.name == current}
            for path in sorted(node.datadir.base.glob("snapshot_*.chk"))
        ]
        return json_response({"snapshots": snapshots})

    async def wal_info(request: Request, principal: Principal) -> Response:
        writer = node.engine.writer
        assert writer is not None
        segments = [
            {"name": s.path.name, "start_lsn": format_lsn(s.start_lsn), "bytes": s.size_bytes}
            for s in list_segments(node.datadir.wal)
        ]
        return json_response(
            {
                "insert_lsn": format_lsn(writer.end_lsn),
                "write_lsn": format_lsn(writer.write_lsn),
                "flush_lsn": format_lsn(writer.flush_lsn),
                "commit_lsn": format_lsn(node.engine.committed_lsn),
                "redo_lsn": format_lsn(node.checkpointer.control.redo_lsn),
                "fsync": writer.policy.value,
                "segments": segments,
            }
        )

    async def wal_records(request: Request, principal: Principal) -> StreamResponse:
        """NDJSON records from `from_lsn` (default: now); with follow=true, new ones as they commit."""
        raw_from = request.query.get("from_lsn")
        from_lsn = node.engine.committed_lsn if raw_from is None else lsn_from_text(raw_from, "from_lsn")
        limit = request.query_int("limit", WAL_RECORDS_MAX, 1, WAL_RECORDS_MAX)
        follow = request.query_bool("follow")
        return StreamResponse(
            200,
            _stream_records(node, from_lsn, limit or WAL_RECORDS_MAX, follow),
            [("content-type", "application/x-ndjson")],
        )

    admin = superuser("admin routes")
    return [
        Route("POST", "/v1/admin/checkpoint", checkpoint, admin),
        Route("POST", "/v1/admin/snapshots", checkpoint, admin),
        Route("GET", "/v1/admin/snapshots", list_snapshots, admin),
        Route("GET", "/v1/admin/wal", wal_info, admin),
        Route("GET", "/v1/admin/wal/records", wal_records, admin),
    ]


def _read_batch(node: AdminNode, from_lsn: int, until_lsn: int, limit: int) -> list[dict[str, Any]]:
    scan = WalScan(node.datadir.wal, records.decode, from_lsn=from_lsn, until_lsn=until_lsn)
    return [
        {"lsn": format_lsn(item.lsn), "end_lsn": format_lsn(item.end_lsn), **records.describe(item.record)}
        for item in itertools.islice(scan, limit)
    ]


async def _stream_records(node: AdminNode, from_lsn: int, limit: int, follow: bool) -> AsyncGenerator[bytes, None]:
    loop = asyncio.get_running_loop()
    engine = node.engine
    cursor = WalCursor(engine.progress, from_lsn, lambda: engine.committed_lsn, node.stopping)
    sent = 0
    while sent < limit:
        until = cursor.bound()
        if cursor.position < until:
            try:
                batch = await loop.run_in_executor(
                    None, _read_batch, node, cursor.position, until, min(WAL_TAIL_BATCH_RECORDS, limit - sent)
                )
            except (WalCorruption, OSError) as exc:  # OSError: a checkpoint recycled the segment
                yield orjson.dumps({"error": {"code": "wal_unreadable", "message": str(exc)}}) + b"\n"
                return
            if batch:
                cursor.position = parse_lsn(batch[-1]["end_lsn"])
                sent += len(batch)
                yield b"".join(orjson.dumps(item) + b"\n" for item in batch)
                continue
            cursor.position = until  # only segment headers lay between
        if not follow or node.stopping.is_set() or engine.read_only_reason is not None:
            return
        if not await cursor.wait_for_more(WAL_TAIL_KEEPALIVE_S):
            yield b"\n"  # keepalive: lets the server notice a client that went away
