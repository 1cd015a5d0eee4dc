"""The HTTP API: routing, authentication, limits and the handlers.

The data path (`/v1/kv/...`) is routed by hand, without a framework: at ~20 us per
request a framework's routing and request objects would cost a third of the budget
(see cli/bench/RESULTS-bakeoff.md). Every route but /health, /ready, /metrics, login and
/v1/replication/system needs `Authorization: Bearer`; 401 means "who are you?", 403 "not
allowed".
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from kvstore.replication.peers import SYSTEM_PATH

from .. import listing, metrics
from ..audit import AuditLog
from ..auth import Authenticator
from ..catalog import SYS_PREFIX, Principal
from ..catalog_changes import CatalogChanges
from ..config import Settings
from ..engine import Engine
from ..errors import (
    BadRequest,
    Forbidden,
    GatewayTimeout,
    KvError,
    LsnBeyondWalEnd,
    MethodNotAllowed,
    NotAnInteger,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unavailable,
)
from ..store import entry_expires_at_ms, entry_value, entry_version
from ..wal.format import format_lsn
from ..writes import TxnOp, WriteResult
from . import admin, openapi, security
from . import replication as replication_api
from .http import (
    JSON_HEADERS,
    JSON_INT_MAX,
    KEY_FORBIDDEN,
    Request,
    Response,
    StreamResponse,
    check_key_characters,
    error_response,
    json_integer,
    json_response,
    lsn_from_text,
    version_from_etag,
)
from .users import CATALOG_PATHS, CatalogAdmin

log = logging.getLogger(__name__)

KV_PREFIX = "/v1/kv/"
INCR_SUFFIX = "/incr"
LOGIN_PATH = "/v1/auth/login"
# Routes answered before authentication: probes and login.
# The query parameters each method of /v1/kv/{key} takes (POST is INCR); any other is a 400.
_KV_QUERY: Final = {"GET": (), "PUT": ("ttl",), "DELETE": (), "POST": ("by",)}
OPEN_ROUTES: Final = (
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", LOGIN_PATH),
    ("GET", SYSTEM_PATH),  # the system identifier only: see api/replication.py
)
# The data path, routed by hand. The path of a key that ends in /incr is also the INCR path of
# the key before it (granian hands over the path decoded, %2F as '/'): POST increments, the
# other methods act on the whole key.
_KEY_METHODS: Final = ("DELETE", "GET", "PUT")
KV_ROUTES: Final = (
    *((method, "/v1/kv/{key}") for method in _KEY_METHODS),
    *((method, "/v1/kv/{key}/incr") for method in (*_KEY_METHODS, "POST")),
)
_OCTET_HEADERS = ("content-type", "application/octet-stream")


class NodeApi(Protocol):
    """What the API needs from the node it serves."""

    settings: Settings
    engine: Engine
    auth: Authenticator
    audit: AuditLog
    catalog_changes: CatalogChanges
    is_replica: bool

    @property
    def ready(self) -> bool: ...

    @property
    def timeline(self) -> int: ...

    def status(self) -> dict[str, Any]: ...


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


class App:
    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.settings = node.settings
        self._catalog = CatalogAdmin(node)  # type: ignore[arg-type]
        self._document: tuple[object, bytes] | None = None  # (auth policy, OpenAPI document) served
        self._cursors = listing.ListingCursors(node.settings.listing_cursors_max)
        self._routes: dict[tuple[str, str], Callable[[Request, Principal], Awaitable[Response | StreamResponse]]] = {
            ("GET", "/v1/kv"): self.list_keys,
            ("POST", "/v1/txn"): self.txn,
            ("GET", "/v1/status"): self.status,
            ("GET", "/openapi.json"): self.openapi,
            **admin.routes(node),  # type: ignore[arg-type]
            **security.routes(node),
            **replication_api.routes(node),  # type: ignore[arg-type]
        }

    # The engine and authenticator exist only once recovery is done (see NodeApi.ready).
    @property
    def engine(self) -> Engine:
        return self.node.engine

    @property
    def auth(self) -> Authenticator:
        return self.node.auth

    def route_table(self) -> list[tuple[str, str]]:
        """Every (method, path template) this app serves: what the OpenAPI document must describe."""
        return [*OPEN_ROUTES, *KV_ROUTES, *self._routes, *self._catalog.route_table()]

    # -- entry point ---------------------------------------------------------------

    async def handle(self, request: Request) -> Response | StreamResponse:
        try:
            return await self._dispatch(request)
        except KvError as error:
            return error_response(error)
        except Exception:
            log.exception("unhandled error", extra={"method": request.method, "path": request.path})
            return json_response({"error": {"code": "internal", "message": "internal error; see the node log"}}, 500)

    async def _dispatch(self, request: Request) -> Response | StreamResponse:
        path = request.path
        if path.startswith(KV_PREFIX) and self.node.ready:
            return await self._kv(request)
        open_methods = [method for method, open_path in OPEN_ROUTES if open_path == path]
        if open_methods and request.method not in open_methods:
            raise MethodNotAllowed(f"{request.method} is not supported on {path}", open_methods)
        if path == "/health":
            return json_response({"status": "ok"})
        if path == "/ready":
            if self.node.ready:
                return json_response({"status": "ready"})
            return json_response({"status": "starting"}, 503)
        if path == "/metrics":
            return Response(200, metrics.exposition(), [("content-type", "text/plain; version=0.0.4; charset=utf-8")])
        if not self.node.ready:
            raise Unavailable("the node is still recovering; retry when /ready says ready")
        if path == LOGIN_PATH:
            return await self.login(request)
        if path == SYSTEM_PATH:
            return json_response(replication_api.system_document(self.node))
        # Authenticated before routing: without credentials, 401 says nothing about which routes exist.
        principal = self._authenticate(request)
        if any(path == base or path.startswith(base + "/") for base in CATALOG_PATHS):
            return await self._catalog.handle(request, principal)
        handler = self._routes.get((request.method, path))
        if handler is None:
            allowed = [method for method, route_path in self._routes if route_path == path]
            if allowed:
                raise MethodNotAllowed(f"{request.method} is not supported on {path}", allowed)
            raise NotFound(f"no route {request.method} {path}")
        return await handler(request, principal)

    # -- data API --------------------------------------------------------------------

    def _key(self, raw: str, *, may_create: bool = True) -> str:
        """`may_create` False: a transaction's del or check, whose JSON names a key exactly, may
        name one the character rule now refuses (stored by an older version), so it can go."""
        key = raw  # granian hands over the path already percent-decoded; never decode twice
        if not key:
            raise BadRequest("key must not be empty")
        if may_create:
            check_key_characters(key)
        size = len(key.encode("utf-8"))
        if size > self.settings.max_key_bytes:
            raise BadRequest(f"key is {size} bytes; the limit is {self.settings.max_key_bytes} (max_key_bytes)")
        return key

    def _authorize(self, principal: Principal, action: str, key: str) -> None:
        if not principal.can(action, key):
            metrics.AUTH_FAILURES.labels("forbidden").inc()
            what = "system catalog keys need a superuser" if key.startswith(SYS_PREFIX) else f"no {action} grant"
            raise Forbidden(f"user {principal.name!r} may not {action} {key!r}: {what}")

    def _authenticate(self, request: Request) -> Principal:
        """The server authenticates from the headers before it reads a body (rsgi.py): reuse that."""
        if request.principal is not None:
            return request.principal
        return self.auth.authenticate(request.header("authorization"), request.address)

    async def _kv(self, request: Request) -> Response:
        principal = self._authenticate(request)
        method = request.method
        raw = request.path[len(KV_PREFIX) :]
        if request.query_string and method in _KV_QUERY and (method != "POST" or raw.endswith(INCR_SUFFIX)):
            request.only_query(_KV_QUERY[method])  # after routing: a POST elsewhere is a 405
        started = time.perf_counter()
        if method == "GET":
            op, response = "get", await self._get(request, principal, self._key(raw))
        elif method == "PUT":
            op, response = "put", await self._put(request, principal, self._key(raw))
        elif method == "DELETE":
            op, response = "delete", await self._delete(request, principal, self._key(raw))
        elif method == "POST" and raw.endswith(INCR_SUFFIX):
            op, response = "incr", await self._incr(request, principal, self._key(raw[: -len(INCR_SUFFIX)]))
        else:
            allowed = (*_KEY_METHODS, "POST") if raw.endswith(INCR_SUFFIX) else _KEY_METHODS
            raise MethodNotAllowed(f"{method} is not supported on {request.path}", allowed)
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
        headers = [_OCTET_HEADERS, ("etag", etag)]
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
            result = await self.node.catalog_changes.raw_put(key, value, if_version, if_absent)
            self._audit_catalog(request, principal, "set", key)
        else:
            result = await self.engine.put(key, value, ttl_s, if_version, if_absent)
        timeline = self.node.timeline
        body = {
            "key": key,
            "version": result.version,
            "commit_lsn": format_lsn(result.commit_lsn),
            "timeline": timeline,
        }
        headers = _write_headers(result, timeline)
        return json_response(body, 201 if result.created else 200, headers)

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
                result = await self.node.catalog_changes.raw_delete(key, if_version)
                self._audit_catalog(request, principal, "del", key)
            else:
                result = await self.engine.delete(key, if_version)
        except NotFound as missing:
            return error_response(missing)
        except PreconditionFailed as failed:
            return error_response(failed)
        return Response(204, b"", _write_headers(result, self.node.timeline))

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
            value, result = await self.engine.incr(key, by)
        except NotAnInteger as failed:
            return error_response(failed)
        timeline = self.node.timeline
        body = {
            "key": key,
            "value": value,
            "version": result.version,
            "commit_lsn": format_lsn(result.commit_lsn),
            "timeline": timeline,
        }
        return json_response(body, 200, _write_headers(result, timeline))

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
        document = request.json()
        if not isinstance(document, dict) or not isinstance(document.get("ops"), list):
            raise BadRequest('transaction body must be {"ops": [...]}')
        raw_ops = document["ops"]
        if not raw_ops:
            raise BadRequest("transaction has no ops")
        if len(raw_ops) > self.settings.max_txn_ops:
            raise PayloadTooLarge(f"transaction has {len(raw_ops)} ops; the limit is {self.settings.max_txn_ops}")
        ops = self._txn_ops(raw_ops, principal)
        catalog_ops = [index for index, op in enumerate(ops) if op.key.startswith(SYS_PREFIX)]
        for index in catalog_ops:
            if ops[index].ttl_s is not None:
                raise BadRequest(f"op {index}: catalog documents cannot expire: send no ttl")
            ops[index] = self.node.catalog_changes.raw_txn_op(ops[index])
        started = time.perf_counter()
        results, result = await self.engine.txn(ops)
        for index in catalog_ops:
            if ops[index].kind != "check":
                self._audit_catalog(request, principal, ops[index].kind, ops[index].key)
        self._observe("txn", 200, time.perf_counter() - started)
        timeline = self.node.timeline
        commit_lsn = format_lsn(result.commit_lsn)
        body = {"results": results, "version": result.version, "commit_lsn": commit_lsn, "timeline": timeline}
        return json_response(body, 200, [("x-kv-commit-lsn", commit_lsn), ("x-kv-timeline", str(timeline))])

    def _txn_ops(self, raw_ops: list[Any], principal: Principal) -> list[TxnOp]:
        # Transactions carry up to max_txn_ops ops, so the common shape
        # {"op": "set", "key": str, "value": str} is checked inline (~1 us an op); any
        # other op goes through _txn_op, which also produces the precise error.
        max_value_bytes = self.settings.max_value_bytes
        short_key_chars = self.settings.max_key_bytes // 4  # within the limit whatever the UTF-8
        check_grants = not principal.superuser
        ops: list[TxnOp] = []
        for index, raw in enumerate(raw_ops):
            if type(raw) is dict and len(raw) == 3 and raw.get("op") == "set":
                key, text = raw.get("key"), raw.get("value")
                if (
                    type(key) is str
                    and type(text) is str
                    and 0 < len(key) <= short_key_chars
                    and len(value := text.encode()) <= max_value_bytes
                    and KEY_FORBIDDEN.search(key) is None
                ):
                    if check_grants:
                        self._authorize(principal, "write", key)
                    ops.append(TxnOp("set", key, value))
                    continue
            ops.append(self._txn_op(index, raw, principal))
        return ops

    def _txn_op(self, index: int, raw: Any, principal: Principal) -> TxnOp:
        if not isinstance(raw, dict):
            raise BadRequest(f"op {index}: must be an object")
        kind = raw.get("op")
        if kind not in ("set", "del", "check"):
            raise BadRequest(f"op {index}: 'op' must be set, del or check")
        key_raw = raw.get("key")
        if not isinstance(key_raw, str):
            raise BadRequest(f"op {index}: 'key' must be a string")
        key = self._key(key_raw, may_create=kind == "set")
        self._authorize(principal, {"set": "write", "del": "delete", "check": "read"}[kind], key)
        value = b""
        if kind == "set":
            if ("value" in raw) == ("value_base64" in raw):
                raise BadRequest(f"op {index}: set needs one of 'value' (text) or 'value_base64'")
            if "value" in raw:
                if not isinstance(raw["value"], str):
                    raise BadRequest(f"op {index}: value must be text; send bytes as value_base64")
                value = raw["value"].encode("utf-8")
            else:
                try:
                    value = base64.b64decode(raw["value_base64"], validate=True)
                except (TypeError, ValueError):
                    raise BadRequest(f"op {index}: value_base64 is not valid base64") from None
            if len(value) > self.settings.max_value_bytes:
                raise PayloadTooLarge(
                    f"op {index}: value is {len(value)} bytes; the limit is {self.settings.max_value_bytes}"
                )
        ttl_s = raw.get("ttl")
        if ttl_s is not None:
            ttl_s = json_integer(ttl_s, 1, self.settings.max_ttl_s)
            if ttl_s is None:
                raise BadRequest(f"op {index}: ttl must be an integer 1..{self.settings.max_ttl_s}")
        if_version = raw.get("if_version")
        if if_version is not None:
            if_version = json_integer(if_version, 0, JSON_INT_MAX)
            if if_version is None:
                raise BadRequest(f"op {index}: if_version must be a version: an integer 0..{JSON_INT_MAX}")
        if_absent = raw.get("if_absent", False)
        if not isinstance(if_absent, bool):
            raise BadRequest(f"op {index}: if_absent must be true or false")
        return TxnOp(kind, key, value, ttl_s, if_version, if_absent)

    # -- auth, status, docs ----------------------------------------------------------

    async def login(self, request: Request) -> Response:
        document = request.json()
        if not isinstance(document, dict):
            raise BadRequest('login body must be {"username": ..., "password": ...}')
        username, password = document.get("username"), document.get("password")
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            raise BadRequest('login body must be {"username": ..., "password": ...}')
        if len(password) > 1024 or len(username) > 256:
            raise BadRequest("username or password too long")
        token, expires_at = await self.auth.login(username, password, request.address)
        return json_response({"token": token, "token_type": "Bearer", "expires_at": expires_at})

    async def status(self, request: Request, principal: Principal) -> Response:
        return json_response(self.node.status())

    async def openapi(self, request: Request, principal: Principal) -> Response:
        # Built from this node's limits and the auth policy in force, again only when the policy changes.
        policy = self.auth.policy()
        if self._document is None or self._document[0] != policy:
            self._document = (policy, openapi.document(self.settings, policy))
        return Response(200, self._document[1], JSON_HEADERS)
