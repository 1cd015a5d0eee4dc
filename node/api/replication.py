"""HTTP routes of replication (the primary's and the replica's), promotion and rejoin.

    GET  /v1/replication/system        {"system_identifier"}, without credentials (see below)
    GET  /v1/replication/identify      system id, role, timeline, history (IDENTIFY_SYSTEM)
    GET  /v1/replication/stream        ?from_lsn=&timeline=&slot=&system_identifier= -> WAL stream
    GET  /v1/replication/basebackup    ?slot= -> a snapshot, its LSNs in X-KV-* headers
    POST /v1/replication/feedback      {slot, timeline, write_lsn, flush_lsn, apply_lsn}
    POST /v1/admin/promote             a replica becomes the primary of a new timeline
    POST /v1/admin/rejoin              {"primary": URL}: follow the new primary (rewinding)
    GET  /v1/admin/digest              SHA-256 over every key, value, version and expiry

The replication routes need the `replication` action (the built-in role of that name)
or a superuser; the admin ones a superuser. `/v1/replication/system` needs nothing: a node
asks it of a URL before it sends that URL its replication credentials (rejoin), and the
system identifier is no credential (it is in every replica's control file and status).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol

from kvstore.replication import protocol
from kvstore.replication.peers import SYSTEM_PATH
from kvstore.replication.primary import Primary
from kvstore.replication.roles import Roles

from ..catalog import Principal
from ..checkpoint import Checkpointer
from ..engine import Engine
from ..errors import BadRequest, Conflict
from ..store import entry_expires_at_ms, entry_value, entry_version
from .http import Request, Response, StreamResponse, json_integer, json_response
from .routes import REPLICATION, OpenRoute, Route, superuser

MAX_SLOT_CHARS = 64
MAX_POSITION = 2**63 - 1  # LSNs and timelines a client sends
FEEDBACK_LSNS = ("write_lsn", "flush_lsn", "apply_lsn")


class ReplicationApiNode(Protocol):
    """What these routes use: the role (primary, receiver, promotion, rejoin) and the storage."""

    engine: Engine
    checkpointer: Checkpointer
    roles: Roles


def _lsn_param(request: Request, name: str) -> int:
    value = request.query_int(name, None, 0, MAX_POSITION)
    if value is None:
        raise BadRequest(f"query parameter {name!r} is required")
    return value


def digest(engine: Engine) -> dict[str, Any]:
    """One pass over the store in key order, on the event loop: the answer describes exactly
    the state at `applied_lsn` (about a second per million keys; for tests and audits)."""
    store = engine.store
    hasher = hashlib.sha256()
    count = 0
    for key, entry in store.items_sorted():
        encoded = key.encode()
        hasher.update(len(encoded).to_bytes(4, "little") + encoded)
        value = entry_value(entry)
        hasher.update(len(value).to_bytes(4, "little") + value)
        hasher.update(entry_version(entry).to_bytes(8, "little") + entry_expires_at_ms(entry).to_bytes(8, "little"))
        count += 1
    return {"digest": hasher.hexdigest(), "keys": count, "apply_lsn": store.applied_lsn, "revision": store.revision}


def routes(node: ReplicationApiNode) -> list[Route | OpenRoute]:
    def primary() -> Primary:
        roles = node.roles
        if roles.primary is None or roles.is_replica:
            raise Conflict(f"this node is a replica of {roles.receiver.status.primary_url if roles.receiver else '?'}")
        return roles.primary

    async def system(request: Request) -> Response:
        return json_response({"system_identifier": str(node.checkpointer.control.system_identifier)})

    async def identify(request: Request, principal: Principal) -> Response:
        roles = node.roles
        serving = roles.primary if not roles.is_replica else None
        identity = protocol.Identity(
            system_identifier=node.checkpointer.control.system_identifier,
            timeline=roles.timeline,
            role="primary" if serving is not None else "replica",
            # A primary streams what is durable here; a replica reports what it applied.
            write_lsn=node.engine.write_lsn if serving is not None else node.engine.committed_lsn,
            history=tuple(roles.history),
            fenced=serving.not_to_follow() if serving is not None else None,
        )
        return json_response(identity.to_document())

    async def stream(request: Request, principal: Principal) -> StreamResponse:
        source = primary()
        from_lsn, timeline = _lsn_param(request, "from_lsn"), _lsn_param(request, "timeline")
        slot = request.query.get("slot") or ""
        if not slot or len(slot) > MAX_SLOT_CHARS:
            raise BadRequest(f"query parameter 'slot' (the replica's name, 1-{MAX_SLOT_CHARS} characters) is required")
        source.check_stream(from_lsn, timeline, request.query.get("system_identifier"))
        chunks = source.stream(slot, from_lsn, request.address)
        return StreamResponse(200, chunks, [("content-type", "application/x-kvstore-wal")])

    async def base_backup(request: Request, principal: Principal) -> StreamResponse:
        slot = request.query.get("slot") or ""
        if not slot or len(slot) > MAX_SLOT_CHARS:
            raise BadRequest(f"query parameter 'slot' (the replica's name, 1-{MAX_SLOT_CHARS} characters) is required")
        backup = await primary().base_backup(slot)
        return StreamResponse(200, backup.chunks, backup.headers)

    async def feedback(request: Request, principal: Principal) -> Response:
        document = request.json()
        fields = ("slot", "timeline", *FEEDBACK_LSNS)
        if not isinstance(document, dict) or any(name not in document for name in fields):
            raise BadRequest(f"feedback must be {{{', '.join(fields)}}}")
        slot = document["slot"]
        if not isinstance(slot, str) or not 0 < len(slot) <= MAX_SLOT_CHARS:
            raise BadRequest(f"slot must be the replica's name, 1-{MAX_SLOT_CHARS} characters")
        positions = {name: json_integer(document[name], 0, MAX_POSITION) for name in ("timeline", *FEEDBACK_LSNS)}
        for name, value in positions.items():
            if value is None:
                raise BadRequest(f"{name} must be an integer from 0 to {MAX_POSITION}, got {document[name]!r}")
        return json_response(primary().feedback({**document, **positions}, request.address))

    async def promote(request: Request, principal: Principal) -> Response:
        return json_response(await node.roles.promote())

    async def rejoin(request: Request, principal: Principal) -> Response:
        document = request.json()
        url = document.get("primary") if isinstance(document, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BadRequest('body must be {"primary": "http://HOST:PORT"}')
        return json_response(await node.roles.rejoin(url), 202)

    async def store_digest(request: Request, principal: Principal) -> Response:
        started = time.perf_counter()
        document = digest(node.engine)
        document["seconds"] = round(time.perf_counter() - started, 3)
        return json_response(document)

    admin = superuser("admin routes")
    return [
        OpenRoute("GET", SYSTEM_PATH, system),
        Route("GET", "/v1/replication/identify", identify, REPLICATION),
        Route("GET", "/v1/replication/stream", stream, REPLICATION),
        Route("GET", "/v1/replication/basebackup", base_backup, REPLICATION),
        Route("POST", "/v1/replication/feedback", feedback, REPLICATION),
        Route("POST", "/v1/admin/promote", promote, admin),
        Route("POST", "/v1/admin/rejoin", rejoin, admin),
        Route("GET", "/v1/admin/digest", store_digest, admin),
    ]
