"""`GET /v1/admin/audit?since=&user=&follow=`: the audit log (logins, refusals, catalog changes)
as NDJSON, oldest retained line first, and with follow=true the lines written after, until the
client leaves. Superuser only: it is how an operator reads the log without a shell on the node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Protocol

from ..audit import AuditLog
from ..audit_reader import AuditFilter, AuditTail, parse_line, since_text
from ..catalog import Principal
from ..errors import BadRequest
from .http import Request, StreamResponse
from .routes import Route, superuser

# A follower looks for new lines this often: `tail -f` polls too, and audit events are rare.
AUDIT_FOLLOW_POLL_S = 0.25
AUDIT_KEEPALIVE_S = 5.0  # an empty line this often lets the server notice a client that left
AUDIT_USER_MAX_CHARS = 256


class AuditNode(Protocol):
    audit: AuditLog
    stopping: asyncio.Event


def routes(node: AuditNode) -> list[Route]:
    async def audit(request: Request, principal: Principal) -> StreamResponse:
        request.only_query(("since", "user", "follow"))
        since = request.query.get("since")
        user = request.query.get("user")
        if user is not None and not 0 < len(user) <= AUDIT_USER_MAX_CHARS:
            raise BadRequest(f"query parameter 'user' must be 1 to {AUDIT_USER_MAX_CHARS} characters")
        try:
            wanted = AuditFilter(since_text(since) if since is not None else None, user)
        except ValueError as exc:
            raise BadRequest(f"query parameter 'since': {exc}") from None
        tail = AuditTail(node.audit.path, node.audit.keep)
        chunks = _stream(node, tail, wanted, request.query_bool("follow"))
        return StreamResponse(200, chunks, [("content-type", "application/x-ndjson")])

    return [Route("GET", "/v1/admin/audit", audit, superuser("admin routes"))]


async def _stream(node: AuditNode, tail: AuditTail, wanted: AuditFilter, follow: bool) -> AsyncGenerator[bytes, None]:
    loop = asyncio.get_running_loop()
    try:
        quiet_since = time.monotonic()
        while True:
            lines = await loop.run_in_executor(None, tail.read)
            picked = [line for line in lines if (event := parse_line(line)) is not None and wanted.matches(event)]
            if picked:
                quiet_since = time.monotonic()
                yield b"\n".join(picked) + b"\n"
            if lines:
                continue
            if not follow or node.stopping.is_set():
                return
            if time.monotonic() - quiet_since >= AUDIT_KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield b"\n"
            await asyncio.sleep(AUDIT_FOLLOW_POLL_S)
    finally:
        tail.close()
