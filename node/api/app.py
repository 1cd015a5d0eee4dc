"""The HTTP API: routing, authentication, limits and the handlers.

The data path (`/v1/kv/...`) is routed by hand, without a framework: at ~20 us per
request a framework's routing and request objects would cost a third of the budget
(see bench/results/RESULTS-bakeoff.md). Every route but /health, /ready, /metrics, login and
/v1/replication/system needs `Authorization: Bearer`; 401 means "who are you?", 403 "not
allowed".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from kvstore.replication.peers import SYSTEM_PATH

from .. import metrics
from ..auth import Authenticator
from ..catalog import Principal
from ..engine import Engine
from ..errors import (
    BadRequest,
    KvError,
    MethodNotAllowed,
    NotFound,
    Unavailable,
)
from . import admin, openapi, security
from . import replication as replication_api
from .http import (
    JSON_HEADERS,
    Request,
    Response,
    StreamResponse,
    error_response,
    json_response,
)
from .kv import KV_PREFIX, KV_ROUTES, KvApi, KvNode
from .users import CATALOG_PATHS, CatalogAdmin, CatalogNode

log = logging.getLogger(__name__)

LOGIN_PATH = "/v1/auth/login"
# Routes answered before authentication: probes and login.
OPEN_ROUTES: Final = (
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", LOGIN_PATH),
    ("GET", SYSTEM_PATH),  # the system identifier only: see api/replication.py
)


class NodeApi(
    KvNode, CatalogNode, security.SecurityNode, admin.AdminNode, replication_api.ReplicationApiNode, Protocol
):
    """What the API needs from the node it serves: what each part of it uses (each declares
    its own), the node's readiness and its status document."""

    @property
    def ready(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


class App:
    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.settings = node.settings
        self._kv = KvApi(node)
        self._catalog = CatalogAdmin(node)
        self._document: tuple[object, bytes] | None = None  # (auth policy, OpenAPI document) served
        self._routes: dict[tuple[str, str], Callable[[Request, Principal], Awaitable[Response | StreamResponse]]] = {
            ("GET", "/v1/kv"): self._kv.list_keys,
            ("POST", "/v1/txn"): self._kv.txn,
            ("GET", "/v1/status"): self.status,
            ("GET", "/openapi.json"): self.openapi,
            **admin.routes(node),
            **security.routes(node),
            **replication_api.routes(node),
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
            return await self._kv.handle(request, self._authenticate(request))
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

    # -- data API (kv.py) -------------------------------------------------------------

    def _authenticate(self, request: Request) -> Principal:
        """The server authenticates from the headers before it reads a body (rsgi.py): reuse that."""
        if request.principal is not None:
            return request.principal
        return self.auth.authenticate(request.header("authorization"), request.address)

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
