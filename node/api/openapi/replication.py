"""The replication paths: the system identifier, IDENTIFY, WAL shipping, base backups,
feedback, promotion and rejoin."""

from __future__ import annotations

from typing import Any

from ..replication import MAX_POSITION, MAX_SLOT_CHARS
from .parts import error_responses, header, integer, json_body, obj, ok, query_param


def paths() -> dict[str, dict[str, Any]]:
    slot = query_param(
        "slot", {"type": "string", "minLength": 1, "maxLength": MAX_SLOT_CHARS}, "the replica's name", required=True
    )
    position = integer(0, MAX_POSITION)
    feedback = obj(
        {"slot": {"type": "string", "minLength": 1, "maxLength": MAX_SLOT_CHARS}}
        | {name: position for name in ("timeline", "write_lsn", "flush_lsn", "apply_lsn")},
        ("slot", "timeline", "write_lsn", "flush_lsn", "apply_lsn"),
    )
    backup_headers = {
        name: header({"type": "string"}, what)
        for name, what in (
            ("X-KV-System-Identifier", "the cluster's system identifier"),
            ("X-KV-Timeline", "the primary's timeline"),
            ("X-KV-Redo-LSN", "replay from here (a byte position)"),
            ("X-KV-Start-LSN", "stream from here (a byte position)"),
            ("X-KV-Consistent-LSN", "the snapshot is consistent once replayed to here"),
            ("X-KV-Snapshot", "the snapshot's file name"),
            ("X-KV-Snapshot-Bytes", "its size"),
        )
    }
    return {
        "/v1/replication/system": {
            "get": {
                "operationId": "systemIdentifier",
                "summary": "This node's system identifier, without credentials: how a node checks that a URL is a "
                "node of its cluster before sending it the replication user's password (rejoin)",
                "responses": {
                    "200": ok(
                        obj({"system_identifier": {"type": "string"}}, ("system_identifier",)), "the system identifier"
                    )
                },
            }
        },
        "/v1/replication/identify": {
            "get": {
                "operationId": "identifySystem",
                "summary": "System identifier, role, timeline and its history (the replication role or a superuser)",
                "responses": {
                    "200": ok(
                        obj(
                            {
                                "system_identifier": {"type": "string"},
                                "timeline": {"type": "integer"},
                                "role": {"enum": ["primary", "replica"]},
                                "write_lsn": {"type": "integer"},
                                "history": {"type": "array", "items": {"type": "object"}},
                                "fenced": {"type": ["string", "null"]},
                            },
                            ("system_identifier", "timeline", "role", "write_lsn", "history", "fenced"),
                        ),
                        "who this node is",
                    )
                },
            }
        },
        "/v1/replication/stream": {
            "get": {
                "operationId": "streamWal",
                "summary": "The WAL from from_lsn as CRC-framed messages, until the client leaves; a replica on a "
                "newer timeline fences this node",
                "parameters": [
                    query_param("from_lsn", position, "a byte position", required=True),
                    query_param("timeline", position, "the replica's timeline", required=True),
                    slot,
                    query_param("system_identifier", {"type": "string"}, "refuse (409) if this node's differs"),
                ],
                "responses": {
                    "200": {
                        "description": "the stream",
                        "content": {"application/x-kvstore-wal": {"schema": {"type": "string", "format": "binary"}}},
                    }
                }
                | error_responses(400, 409),
            }
        },
        "/v1/replication/basebackup": {
            "get": {
                "operationId": "baseBackup",
                "summary": "A fresh checkpoint's snapshot; the slot keeps the WAL needed after it",
                "parameters": [slot],
                "responses": {
                    "200": {
                        "description": "the snapshot file",
                        "headers": backup_headers,
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    }
                }
                | error_responses(400, 409, 421),
            }
        },
        "/v1/replication/feedback": {
            "post": {
                "operationId": "replicationFeedback",
                "summary": "A replica reports its positions (byte positions); a newer timeline fences this node; a "
                "position beyond this node's WAL end is refused (400 lsn_beyond_wal_end), the slot unchanged",
                "requestBody": json_body(feedback, "the replica's slot, timeline and LSNs"),
                "responses": {
                    "200": ok(
                        obj(
                            {"timeline": {"type": "integer"}, "write_lsn": {"type": "integer"}},
                            ("timeline", "write_lsn"),
                        ),
                        "this node's timeline and committed LSN",
                    )
                }
                | error_responses(400, 409),
            }
        },
        "/v1/admin/promote": {
            "post": {
                "operationId": "promote",
                "summary": "Make this replica the primary of a new timeline",
                "responses": {"200": ok({"type": "object"}, "the new timeline, its switch LSN")} | error_responses(409),
            }
        },
        "/v1/admin/rejoin": {
            "post": {
                "operationId": "rejoin",
                "summary": "Follow the primary at this URL: divergent WAL is moved into diverged/ (or the data, for a "
                "new base backup); the node restarts as its replica. The URL is a node's base URL (no path, query "
                "or user@); it must answer /v1/replication/system with this node's system identifier before the "
                "replication credentials are sent to it (400 not_a_cluster_node otherwise)",
                "requestBody": json_body(
                    obj({"primary": {"type": "string", "pattern": "^https?://"}}, ("primary",)), "the new primary"
                ),
                "responses": {"202": ok({"type": "object"}, "the plan: follow, rewind or rebootstrap")}
                | error_responses(400, 409),
            }
        },
    }
