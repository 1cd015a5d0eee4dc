"""The operations paths: checkpoints, snapshots, WAL inspection, the store's digest and profiles."""

from __future__ import annotations

from typing import Any

from ..admin import WAL_RECORDS_MAX
from ..backups import MAX_URL_CHARS
from ..http import LSN_PATTERN
from ..profile import PROFILE_FORMATS, PROFILE_SECONDS_MAX
from .parts import LSN_TEXT, error_responses, integer, json_body, obj, ok, query_param


def paths() -> dict[str, dict[str, Any]]:
    checkpoint = obj(
        {
            "redo_lsn": LSN_TEXT,
            "snapshot": {"type": ["string", "null"]},
            "entries": {"type": "integer"},
            "snapshot_bytes": {"type": "integer"},
            "segments_removed": {"type": "integer"},
            "seconds": {"type": "number"},
        },
        ("redo_lsn", "snapshot", "entries", "snapshot_bytes", "segments_removed", "seconds"),
    )
    run_checkpoint = {
        "summary": "Run a checkpoint now (a snapshot, then WAL no longer needed is removed)",
        "responses": {"200": ok(checkpoint, "the checkpoint")},
    }
    segment = obj(
        {"name": {"type": "string"}, "start_lsn": LSN_TEXT, "bytes": {"type": "integer"}},
        ("name", "start_lsn", "bytes"),
    )
    wal = obj(
        {
            **{name: LSN_TEXT for name in ("insert_lsn", "write_lsn", "flush_lsn", "commit_lsn", "redo_lsn")},
            "fsync": {"enum": ["always", "interval", "off"]},
            "segments": {"type": "array", "items": segment},
        },
        ("insert_lsn", "write_lsn", "flush_lsn", "commit_lsn", "redo_lsn", "fsync", "segments"),
    )
    snapshot = obj(
        {"name": {"type": "string"}, "bytes": {"type": "integer"}, "current": {"type": "boolean"}},
        ("name", "bytes", "current"),
    )
    manifest = obj(
        {
            "format_version": {"type": "integer"},
            "system_identifier": {"type": "string", "pattern": "^[0-9]+$"},
            "timeline": {"type": "integer"},
            "redo_lsn": LSN_TEXT,
            "consistent_lsn": LSN_TEXT,
            "snapshot": {"type": "string"},
            "source_file": {"type": "string"},
            "bytes": {"type": "integer"},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "created_at": {"type": "string"},
        },
        ("format_version", "system_identifier", "timeline", "redo_lsn", "consistent_lsn", "snapshot")
        + ("source_file", "bytes", "sha256", "created_at"),
    )
    export_target = obj(
        {
            "to": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_URL_CHARS,
                "description": "s3://bucket/prefix (the node's AWS_* environment: credentials, endpoint, "
                "region) or file:///absolute/path, a directory on the node's own disk",
            }
        },
        ("to",),
        closed=True,
    )
    return {
        "/v1/admin/snapshots/export": {
            "post": {
                "operationId": "exportSnapshot",
                "summary": "Checkpoint, then upload the snapshot and its manifest under "
                "<to>/snapshots/<timeline>-<redo LSN>/ (create-only: an existing one is a 409)",
                "requestBody": json_body(export_target, "where to upload"),
                "responses": {
                    "200": ok(
                        obj(
                            {"to": {"type": "string"}, "manifest": manifest, "checkpoint": checkpoint},
                            ("to", "manifest", "checkpoint"),
                        ),
                        "what was uploaded",
                    )
                }
                | error_responses(400, 409, 502),
            }
        },
        "/v1/admin/checkpoint": {"post": {"operationId": "checkpoint", **run_checkpoint}},
        "/v1/admin/snapshots": {
            "get": {
                "operationId": "listSnapshots",
                "summary": "Snapshots in base/",
                "responses": {
                    "200": ok(obj({"snapshots": {"type": "array", "items": snapshot}}, ("snapshots",)), "the snapshots")
                },
            },
            "post": {"operationId": "createSnapshot", **run_checkpoint},
        },
        "/v1/admin/wal": {
            "get": {
                "operationId": "walInfo",
                "summary": "WAL positions and segments",
                "responses": {"200": ok(wal, "the WAL")},
            }
        },
        "/v1/admin/wal/records": {
            "get": {
                "operationId": "walRecords",
                "summary": "WAL records as NDJSON, one object a line, from from_lsn (default: now)",
                "parameters": [
                    query_param("from_lsn", {"type": "string", "pattern": LSN_PATTERN}, "X/Y, or a byte position"),
                    query_param(
                        "limit", integer(1, WAL_RECORDS_MAX), f"at most this many records (default {WAL_RECORDS_MAX})"
                    ),
                    query_param(
                        "follow",
                        {"type": "boolean"},
                        "keep streaming records as they commit (empty lines keep the "
                        "connection alive) until the client leaves",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "NDJSON: {lsn, end_lsn, kind, ...} per line",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    }
                }
                | error_responses(400),
            }
        },
        "/v1/watch": {
            "get": {
                "operationId": "watch",
                "summary": "Committed changes under a prefix as NDJSON, live, from from_lsn (default: now)",
                "parameters": [
                    query_param("prefix", {"type": "string"}, "only keys starting with this (default: all)"),
                    query_param(
                        "from_lsn", {"type": "string", "pattern": LSN_PATTERN}, "resume after this event's lsn"
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "NDJSON: {type: set|del|expire, key, value_base64, version, expires_at, lsn} per "
                        "change, {type: progress, lsn} when idle, a last {type: cancelled, reason}: reason "
                        "slow_watcher when the client read nothing for watch_stall_timeout_s",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    }
                }
                | error_responses(400, 403, 410, 429),
            }
        },
        "/v1/admin/profile": {
            "get": {
                "operationId": "profile",
                "summary": "Sample the event loop's thread for `seconds` while the node serves; one profile at a time",
                "parameters": [
                    query_param("seconds", integer(1, PROFILE_SECONDS_MAX), "how long to sample", required=True),
                    query_param(
                        "format",
                        {"enum": list(PROFILE_FORMATS)},
                        "collapsed (default): `frame;frame count` lines, counts in samples (flamegraph.pl, "
                        "speedscope); speedscope: speedscope's JSON file format",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "the profile",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"type": "object"}},
                        },
                    }
                }
                | error_responses(400, 409),
            }
        },
        "/v1/admin/digest": {
            "get": {
                "operationId": "digest",
                "summary": "SHA-256 over every key, value, version and expiry, in key order",
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                "keys": {"type": "integer"},
                                "apply_lsn": {"type": "integer"},
                                "revision": {"type": "integer"},
                                "seconds": {"type": "number"},
                            },
                            ("digest", "keys", "apply_lsn", "revision", "seconds"),
                        ),
                        "the digest at apply_lsn",
                    )
                },
            }
        },
    }
