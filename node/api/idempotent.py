"""`Idempotency-Key` on the data API's writes: a retry is answered from the first answer.

A write carrying the header is looked up, on the event loop and right before it executes,
under `_sys.idempotency:<user>:<key>` (idempotency.py): found, the stored answer is sent
again and nothing is written; not found, the write executes and its answer is logged in its
own record. Nothing awaits between the look-up and the write's WAL append, and writes are
serialized on the loop, so two requests with one key never both execute; while the first
is logged but not committed, a retry waits for its commit and gets its answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

import orjson

from .. import catalog_documents, idempotency
from ..catalog import Principal
from ..engine import Engine
from ..errors import BadRequest
from ..idempotency import Answer, KeyReused, Remember
from ..store import entry_value
from ..writes import now_ms
from .http import JSON_HEADERS, Request, Response

T = TypeVar("T")

# Part of the request besides method, path, query and body: a retry sends them unchanged.
_FINGERPRINTED_HEADERS: Final = ("if-match", "if-none-match")


def respond(answer: Answer) -> Response:
    if answer.body is None:
        return Response(answer.status, b"", answer.headers)
    return Response(answer.status, orjson.dumps(answer.body), JSON_HEADERS + answer.headers)


def refuse_on_catalog(request: Request) -> None:
    """PUT and DELETE of one catalog document: a user or role deleted takes its dependents along
    in a transaction of its own, and compare-and-set (If-Match) already makes a retry safe. (A
    transaction's catalog ops may carry the key: they are one record like any other.)"""
    if idempotency.HEADER in request.headers:
        raise BadRequest(
            "Idempotency-Key is not taken by PUT or DELETE of a system catalog key (_sys.*): send If-Match "
            "with the version you read, which makes a retry safe (or make the change in a POST /v1/txn)"
        )


class IdempotentWrites:
    def __init__(self, engine: Callable[[], Engine], ttl_s: int) -> None:
        self._engine = engine  # exists only once recovery is done
        self._ttl_ms = ttl_s * 1000

    async def prepare(
        self, request: Request, principal: Principal, answer: Callable[[T], Answer]
    ) -> Response | Remember[T]:
        """The first answer again when `request`'s key has one; else what the write must remember.
        No await after the last look-up, so the caller's write follows it at once."""
        key = idempotency.parse_key(request.headers[idempotency.HEADER])
        store_key = idempotency.store_key(principal.name, key)
        parts = [request.query_string, *(request.header(name) or "" for name in _FINGERPRINTED_HEADERS)]
        fingerprint = idempotency.fingerprint(request.method, request.path, "\n".join(parts), request.body)
        while True:
            engine = self._engine()
            engine.check_writable()  # a replica answers 421, as to any write, never a replay
            pending = engine.pending_lsn(store_key)
            if pending is None:
                break
            await engine.wait_visible(pending)  # the first is logged, not committed: its answer comes
        entry = engine.get(store_key)
        if entry is None:
            now = now_ms()
            described = {"method": request.method, "path": request.path, "fingerprint": fingerprint}
            return Remember(store_key, described, now, now + self._ttl_ms, answer)
        engine.check_readable()
        # Written by this node only; one that fails its check is a bug, answered 500 and logged.
        document = catalog_documents.parse(store_key, entry_value(entry))
        if document["fingerprint"] != fingerprint:
            raise KeyReused(
                f"this Idempotency-Key was used for a different request ({document['method']} {document['path']}, "
                "or other query, preconditions or body) and is remembered for idempotency_ttl_s: "
                "send a new key with a new request"
            )
        return respond(idempotency.replayed(document))
