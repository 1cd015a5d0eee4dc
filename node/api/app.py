"""The HTTP API: the node's route table, its own routes (probes, login, status, the OpenAPI
document) and the error answers.

Routing is our own (routes.py), without a framework: at ~20 us per request a framework's
routing and request objects would cost a third of the budget (see bench/results/RESULTS-bakeoff.md).
Every route but /health, /ready, /metrics, login and /v1/replication/system needs
`Authorization: Bearer`; 401 means "who are you?", 403 "not allowed".
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from .. import metrics
from ..auth import Authenticator
from ..catalog import Principal
from ..engine import Engine
from ..errors import BadRequest, KvError
from . import admin, audit, backups, openapi, profile, security, watch
from . import replication as replication_api
from .http import (
    JSON_HEADERS,
    Request,
    Response,
    StreamResponse,
    error_response,
    json_response,
)
from .kv import KV_PREFIX, KvApi, KvNode
from .routes import AUTHENTICATED, OpenRoute, Route, Router
from .send_queues import SendQueues
from .users import CatalogAdmin, CatalogNode

log = logging.getLogger(__name__)

LOGIN_PATH = "/v1/auth/login"


class NodeApi(
    KvNode,
    CatalogNode,
    security.SecurityNode,
    admin.AdminNode,
    audit.AuditNode,
    watch.WatchNode,
    replication_api.ReplicationApiNode,
    Protocol,
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
        self.watchers = watch.Watchers(node.settings.max_watchers, SendQueues())
        self._document: tuple[object, bytes] | None = None  # (auth policy, OpenAPI document) served
        self.router = Router(
            [
                OpenRoute("GET", "/health", self.health, before_ready=True),
                OpenRoute("GET", "/ready", self.readiness, before_ready=True),
                OpenRoute("GET", "/metrics", self.metrics_exposition, before_ready=True),
                OpenRoute("POST", LOGIN_PATH, self.login),
                Route("GET", "/v1/status", self.status, AUTHENTICATED),
                Route("GET", "/openapi.json", self.openapi, AUTHENTICATED),
                *self._kv.routes(),
                *admin.routes(node),
                *backups.routes(node),
                *profile.routes(),
                *audit.routes(node),
                *watch.routes(node, self.watchers),
                *security.routes(node),
                *replication_api.routes(node),
                *self._catalog.routes(),
            ],
            fast_prefix=KV_PREFIX,
            ready=lambda: node.ready,
            authenticate=self._authenticate,
        )

    # The engine and authenticator exist only once recovery is done (see NodeApi.ready).
    @property
    def engine(self) -> Engine:
        return self.node.engine

    @property
    def auth(self) -> Authenticator:
        return self.node.auth

    def route_table(self) -> list[tuple[str, str]]:
        """Every (method, path template) this app serves: what the OpenAPI document must describe."""
        return [(route.method, route.path) for route in self.router.routes]

    # -- entry point ---------------------------------------------------------------

    async def handle(self, request: Request) -> Response | StreamResponse:
        try:
            return await self.router.dispatch(request)
        except KvError as error:
            return error_response(error)
        except Exception:
            log.exception("unhandled error", extra={"method": request.method, "path": request.path})
            return json_response({"error": {"code": "internal", "message": "internal error; see the node log"}}, 500)

    def _authenticate(self, request: Request) -> Principal:
        """The server authenticates from the headers before it reads a body (rsgi.py): reuse that."""
        if request.principal is not None:
            return request.principal
        return self.auth.authenticate(request.header("authorization"), request.address)

    # -- probes, auth, status, docs ----------------------------------------------------

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readiness(self, request: Request) -> Response:
        if self.node.ready:
            return json_response({"status": "ready"})
        return json_response({"status": "starting"}, 503)

    async def metrics_exposition(self, request: Request) -> Response:
        return Response(200, metrics.exposition(), [("content-type", "text/plain; version=0.0.4; charset=utf-8")])

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
