"""The data API: `/v1/kv/{key}` (GET, PUT, DELETE, POST .../incr), `GET /v1/kv` (listing) and
`POST /v1/txn`. Every key is checked against the caller's grants; catalog keys (`_sys.`)
go through the catalog's own checks (catalog_changes.py) and are audited. The writes take an
`Idempotency-Key` (idempotent.py): each builds its answer in one place (the `_*_answer`
methods), for the client and for the record that remembers it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Protocol

from .. import idempotency, listing, metrics
from ..audit import AuditLog
from ..catalog import SYS_PREFIX, Principal
from ..catalog_changes import CatalogChanges
from ..config import Settings
from ..engine import Engine
from ..errors import (
    BadRequest,
    Forbidden,
    GatewayTimeout,
    LsnBeyondWalEnd,
    NotAnInteger,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
)
from ..idempotency import Answer
from ..store import entry_expires_at_ms, entry_value, entry_version
from ..wal.format import format_lsn
from ..writes import WriteResult
from .http import Request, Response, error_response, json_response, lsn_from_text, version_from_etag
from .idempotent import IdempotentWrites, refuse_on_catalog, respond
from .routes import KEY_ACTION, Route
from .txn_parse import TxnLimits, parse_txn, valid_key

KV_PREFIX: Final = "/v1/kv/"
INCR_SUFFIX: Final = "/incr"
_KEY_PATH: Final = KV_PREFIX + "{key}"
# The query parameters each method of /v1/kv/{key} takes (POST is INCR); any other is a 400.
_KV_QUERY: Final = {"GET": (), "PUT": ("ttl",), "DELETE": (), "POST": ("by",)}
_OCTET_HEADERS = ("content-type", "application/octet-stream")


# What a route does to the key its path names, once the key is checked.
KeyAction = Callable[[Request, Principal, str], Awaitable[Response]]


class KvNode(Protocol):
    """What the data API needs from the node it serves."""

    settings: Settings
    engine: Engine
    audit: AuditLog
    catalog_changes: CatalogChanges

    @property
    def is_replica(self) -> bool: ...

    @property
    def timeline(self) -> int: ...


def _etag(version: int) -> str:
    return f'"{version}"'


def _iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_headers(result: WriteResult, timeline: int) -> list[tuple[str, str]]:
    return [
        ("etag", _etag(result.version)),
        ("x-kv-commit-lsn", format_lsn(result.commit_lsn)),
        ("x-kv-timeline", str(timeline)),
    ]


class KvApi:
    def __init__(self, node: KvNode) -> None:
        self.node = node
        self.settings = settings = node.settings
        self._txn_limits = TxnLimits(
            settings.max_txn_ops, settings.max_key_bytes, settings.max_value_bytes, settings.max_ttl_s
        )
        self._cursors = listing.ListingCursors(settings.listing_cursors_max)
        self._idempotent = IdempotentWrites(lambda: self.node.engine, settings.idempotency_ttl_s)

    @property
    def engine(self) -> Engine:  # exists only once recovery is done
        return self.node.engine

    def _key(self, raw: str, *, may_create: bool = True) -> str:
        """`may_create` False: a transaction's del or check, whose JSON names a key exactly, may
        name one the character rule now refuses (stored by an older version), so it can go."""
        # granian hands over the path already percent-decoded; never decode twice
        return valid_key(raw, self.settings.max_key_bytes, may_create=may_create)

    def _authorize(self, principal: Principal, action: str, key: str) -> None:
        if not principal.can(action, key):
            metrics.AUTH_FAILURES.labels("forbidden").inc()
            what = "system catalog keys need a superuser" if key.startswith(SYS_PREFIX) else f"no {action} grant"
            raise Forbidden(f"user {principal.name!r} may not {action} {key!r}: {what}")

    def routes(self) -> list[Route]:
        """The path of a key that ends in /incr is also the INCR path of the key before it
        (granian hands over the path decoded, %2F as '/'): POST increments, the other methods
        act on the whole key. So the key handlers read their key from the path themselves."""
        on_key = (("DELETE", self.delete_key), ("GET", self.get_key), ("PUT", self.put_key))
        return [
            Route("GET", "/v1/kv", self.list_keys, KEY_ACTION),
            Route("POST", "/v1/txn", self.txn, KEY_ACTION),
            *(Route(method, _KEY_PATH, handler, KEY_ACTION) for method, handler in on_key),
            *(
                Route(method, _KEY_PATH + INCR_SUFFIX, handler, KEY_ACTION)
                for method, handler in (*on_key, ("POST", self.incr_key))
            ),
        ]

    def get_key(self, request: Request, principal: Principal) -> Awaitable[Response]:
        return self._on_key("get", self._get, request, principal, request.path[len(KV_PREFIX) :])

    def put_key(self, request: Request, principal: Principal) -> Awaitable[Response]:
        return self._on_key("put", self._put, request, principal, request.path[len(KV_PREFIX) :])

    def delete_key(self, request: Request, principal: Principal) -> Awaitable[Response]:
        return self._on_key("delete", self._delete, request, principal, request.path[len(KV_PREFIX) :])

    def incr_key(self, request: Request, principal: Principal) -> Awaitable[Response]:
        raw = request.path[len(KV_PREFIX) : -len(INCR_SUFFIX)]
        return self._on_key("incr", self._incr, request, principal, raw)

    async def _on_key(self, op: str, act: KeyAction, request: Request, principal: Principal, raw: str) -> Response:
        """The hottest path there is: the query and the key checked, then `act` timed. (The key
        handlers above return this coroutine rather than await it: one frame less a request.)"""
        if request.query_string:
            request.only_query(_KV_QUERY[request.method])
        key = self._key(raw)
        started = time.perf_counter()
        response = await act(request, principal, key)
        self._observe(op, response.status, time.perf_counter() - started)
        return response

    @staticmethod
    def _observe(op: str, status: int, seconds: float) -> None:
        metrics.KV_OPERATIONS.observe(op, "ok" if status < 400 else str(status), seconds)

    async def _wait_for_lsn(self, request: Request) -> None:
        """Read your writes on a replica: `X-KV-Min-LSN` (a write's commit LSN) waits, bounded."""
        raw = request.header("x-kv-min-lsn")
        if raw is None:
            return
        lsn = lsn_from_text(raw, "X-KV-Min-LSN")
        if lsn <= self.engine.store.applied_lsn:
            return
        writer = self.engine.writer
        assert writer is not None
        if not self.node.is_replica and lsn > writer.end_lsn:
            # On a primary no write can have it: waiting would only hold the request (a replica
            # waits, bounded: its primary may have written it already).
            raise LsnBeyondWalEnd(
                f"X-KV-Min-LSN {raw} is beyond this primary's WAL end {format_lsn(writer.end_lsn)}: "
                "no write has that LSN; send the commit LSN a write answered with"
            )
        timeout_s = self.settings.min_lsn_wait_s
        try:
            await asyncio.wait_for(self.engine.wait_for_commit(lsn), timeout_s)
        except TimeoutError:
            raise GatewayTimeout(
                f"this node has applied up to {format_lsn(self.engine.store.applied_lsn)}, not {raw}, "
                f"after {timeout_s} s (min_lsn_wait_s); read from the primary or retry"
            ) from None

    async def _get(self, request: Request, principal: Principal, key: str) -> Response:
        self._authorize(principal, "read", key)
        await self._wait_for_lsn(request)
        self.engine.check_readable()
        entry = self.engine.get(key)
        if entry is None:
            return error_response(NotFound(f"key {key!r} not found", key=key))
        etag = _etag(entry_version(entry))
        # The position read at, so a client can watch from it and miss no later change.
        headers = [_OCTET_HEADERS, ("etag", etag), ("x-kv-lsn", format_lsn(self.engine.store.applied_lsn))]
        if entry_expires_at_ms(entry):
            headers.append(("x-kv-expires-at", _iso_ms(entry_expires_at_ms(entry))))
        if_none_match = request.header("if-none-match")
        if if_none_match is not None and if_none_match.strip(" \t") in (etag, f"W/{etag}", "*"):
            return Response(304, b"", headers[1:])
        return Response(200, entry_value(entry), headers)

    async def _put(self, request: Request, principal: Principal, key: str) -> Response:
        self._authorize(principal, "write", key)
        value = request.body
        if len(value) > self.settings.max_value_bytes:
            raise PayloadTooLarge(
                f"value is {len(value)} bytes; the limit is {self.settings.max_value_bytes} (max_value_bytes)"
            )
        ttl_s = request.query_int("ttl", None, 1, self.settings.max_ttl_s)
        if_version, if_absent = self._preconditions(request)
        if key.startswith(SYS_PREFIX):
            if ttl_s is not None:
                raise BadRequest("catalog documents cannot expire: send no ttl")
            refuse_on_catalog(request)
            result = await self.node.catalog_changes.raw_put(key, value, if_version, if_absent)
            self._audit_catalog(request, principal, "set", key)
        elif idempotency.HEADER in request.headers:
            remember = await self._idempotent.prepare(request, principal, partial(self._put_answer, key))
            if isinstance(remember, Response):
                return remember
            result = await self.engine.put(key, value, ttl_s, if_version, if_absent, remember)
        else:
            result = await self.engine.put(key, value, ttl_s, if_version, if_absent)
        return respond(self._put_answer(key, result))

    def _put_answer(self, key: str, result: WriteResult) -> Answer:
        timeline = self.node.timeline
        body = {
            "key": key,
            "version": result.version,
            "commit_lsn": format_lsn(result.commit_lsn),
            "timeline": timeline,
        }
        return Answer(201 if result.created else 200, body, _write_headers(result, timeline))

    def _preconditions(self, request: Request) -> tuple[int | None, bool]:
        if_match = request.header("if-match")
        if_none_match = request.header("if-none-match")
        if if_none_match is not None and if_none_match.strip(" \t") != "*":
            raise BadRequest("on writes, If-None-Match supports only '*' (create only)")
        if if_match is not None and if_match.strip(" \t") == "*":
            raise BadRequest("If-Match: * is not supported; send the version ETag you read")
        if_version = version_from_etag(if_match, "If-Match") if if_match is not None else None
        return if_version, if_none_match is not None

    async def _delete(self, request: Request, principal: Principal, key: str) -> Response:
        self._authorize(principal, "delete", key)
        if_match = request.header("if-match")
        if_version = version_from_etag(if_match, "If-Match") if if_match is not None else None
        try:
            if key.startswith(SYS_PREFIX):
                refuse_on_catalog(request)
                result = await self.node.catalog_changes.raw_delete(key, if_version)
                self._audit_catalog(request, principal, "del", key)
            elif idempotency.HEADER in request.headers:
                remember = await self._idempotent.prepare(request, principal, self._delete_answer)
                if isinstance(remember, Response):
                    return remember
                result = await self.engine.delete(key, if_version, remember)
            else:
                result = await self.engine.delete(key, if_version)
        except NotFound as missing:
            return error_response(missing)
        except PreconditionFailed as failed:
            return error_response(failed)
        return respond(self._delete_answer(result))

    def _delete_answer(self, result: WriteResult) -> Answer:
        return Answer(204, None, _write_headers(result, self.node.timeline))

    def _audit_catalog(self, request: Request, principal: Principal, op: str, key: str) -> None:
        """Catalog changes through the data API are audited like the admin API's."""
        self.node.audit.record("catalog_written", key=key, op=op, by=principal.name, address=request.address)

    async def _incr(self, request: Request, principal: Principal, key: str) -> Response:
        self._authorize(principal, "write", key)
        by = request.query_int("by", 1, -(2**63), 2**63 - 1)
        assert by is not None
        if key.startswith(SYS_PREFIX):
            raise BadRequest("catalog documents are JSON objects, not counters: INCR does not apply")
        try:
            if idempotency.HEADER in request.headers:
                remember = await self._idempotent.prepare(request, principal, partial(self._incr_answer, key))
                if isinstance(remember, Response):
                    return remember
                outcome = await self.engine.incr(key, by, remember)
            else:
                outcome = await self.engine.incr(key, by)
        except NotAnInteger as failed:
            return error_response(failed)
        return respond(self._incr_answer(key, outcome))

    def _incr_answer(self, key: str, outcome: tuple[int, WriteResult]) -> Answer:
        value, result = outcome
        timeline = self.node.timeline
        commit_lsn = format_lsn(result.commit_lsn)
        body = {"key": key, "value": value, "version": result.version, "commit_lsn": commit_lsn, "timeline": timeline}
        return Answer(200, body, _write_headers(result, timeline))

    async def list_keys(self, request: Request, principal: Principal) -> Response:
        request.only_query(("prefix", "after", "limit"))
        prefix = request.query.get("prefix", "")
        after = request.query.get("after") or None
        limit = request.query_int("limit", 100, 1, self.settings.max_scan_limit)
        assert limit is not None
        ranges = listing.read_ranges(principal, prefix)
        if not ranges:
            metrics.AUTH_FAILURES.labels("forbidden").inc()
            raise Forbidden(
                f"user {principal.name!r} may read no key starting with {prefix!r}: no read grant covers it"
            )
        after = self._cursors.resolve(after, principal.name, prefix)
        # Listing shows only what the caller may read (catalogs only to superusers).
        visible = None if principal.superuser else lambda key: principal.can("read", key)
        await self._wait_for_lsn(request)
        self.engine.check_readable()
        page = listing.list_page(
            self.engine.store,
            ranges,
            after,
            limit,
            self.settings.max_scan_examined_keys,
            visible,
            int(time.time() * 1000),
        )
        keys = []
        for key, entry in page.entries:
            item: dict[str, Any] = {"key": key, "version": entry_version(entry), "value_bytes": len(entry_value(entry))}
            if entry_expires_at_ms(entry):
                item["expires_at"] = _iso_ms(entry_expires_at_ms(entry))
            keys.append(item)
        next_after = page.next_after
        if page.stopped_after is not None:  # never name a key the caller may not read
            next_after = self._cursors.issue(principal.name, prefix, page.stopped_after)
        return json_response({"keys": keys, "next_after": next_after})

    async def txn(self, request: Request, principal: Principal) -> Response:
        authorize = None if principal.superuser else lambda action, key: self._authorize(principal, action, key)
        ops = parse_txn(request.json(), self._txn_limits, authorize)
        catalog_ops = [index for index, op in enumerate(ops) if op.key.startswith(SYS_PREFIX)]
        for index in catalog_ops:
            if ops[index].ttl_s is not None:
                raise BadRequest(f"op {index}: catalog documents cannot expire: send no ttl")
            ops[index] = self.node.catalog_changes.raw_txn_op(ops[index])
        started = time.perf_counter()
        if idempotency.HEADER in request.headers:
            remember = await self._idempotent.prepare(request, principal, self._txn_answer)
            if isinstance(remember, Response):
                self._observe("txn", remember.status, time.perf_counter() - started)
                return remember
            outcome = await self.engine.txn(ops, remember)
        else:
            outcome = await self.engine.txn(ops)
        for index in catalog_ops:
            if ops[index].kind != "check":
                self._audit_catalog(request, principal, ops[index].kind, ops[index].key)
        self._observe("txn", 200, time.perf_counter() - started)
        return respond(self._txn_answer(outcome))

    def _txn_answer(self, outcome: tuple[list[dict[str, Any]], WriteResult]) -> Answer:
        results, result = outcome
        timeline = self.node.timeline
        commit_lsn = format_lsn(result.commit_lsn)
        body = {"results": results, "version": result.version, "commit_lsn": commit_lsn, "timeline": timeline}
        return Answer(200, body, [("x-kv-commit-lsn", commit_lsn), ("x-kv-timeline", str(timeline))])
