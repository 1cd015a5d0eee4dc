"""Serving the App over granian's RSGI interface: admission, body limits, responses, streaming.

RSGI (granian's native interface) was picked by measurement over ASGI servers; see
bench/results/RESULTS-bakeoff.md. RSGI hands the app each request once its headers are in and
leaves the body to be read explicitly, so everything that can refuse a request does so from
the headers, before a byte of body is buffered: its declared length, its credentials, the
requests its address has in flight, the body memory in use. A streaming response notices a
departed client when `send_bytes` raises, which ends the stream's generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from granian.rsgi import ProtocolClosed

from .. import metrics
from ..catalog import Principal
from ..config import Settings
from ..errors import (
    IncompleteBody,
    KvError,
    LengthRequired,
    PayloadTooLarge,
    RequestTimeout,
    TooManyRequests,
    Unavailable,
)
from .app import LOGIN_PATH, App
from .connections import Connections
from .deadlines import BodyDeadlines
from .http import Request, Response, StreamResponse, client_address, error_response

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset(("PUT", "POST", "PATCH"))
# What an operator needs while the node is at its request limit: the probes, and the admin API
# for a superuser (settings.operator_reserved_requests beyond max_requests_in_flight).
_PROBE_PATHS = frozenset(("/health", "/ready", "/metrics"))
_ADMIN_PREFIX = "/v1/admin/"
# A body refused for its size up to this size is read and dropped so the client gets a clean
# 413; a larger one is not worth the bandwidth, and that client may see a reset instead.
MAX_DRAIN_BYTES = 64 * 1024 * 1024
# How long a client waiting for a body-memory reservation is told to wait.
BODY_MEMORY_RETRY_AFTER_S = 1


class Admission:
    """What the requests of every listener hold together: requests in flight, in total and per
    client address, and the bytes of the bodies they announced (README, "Connection limits")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exempt = settings.limits_exempt
        self.in_flight = 0
        self.by_address: dict[str, int] = {}
        self.body_bytes = 0
        metrics.bind_gauge(metrics.HTTP_REQUESTS_IN_FLIGHT, lambda: self.in_flight)
        metrics.bind_gauge(metrics.HTTP_BODY_BYTES_IN_FLIGHT, lambda: self.body_bytes)
        operator = settings.operator_address
        self.connections = Connections((settings.listen_port, *([operator[1]] if operator else [])))
        metrics.CONNECTIONS_ACTIVE.bind(self.connections.count)

    def enter(self, address: str) -> None:
        self.in_flight += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1

    def leave(self, address: str, body_bytes: int) -> None:
        """The request is answered: its place and the body bytes it reserved are free again."""
        self.body_bytes -= body_bytes
        self.in_flight -= 1
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]  # the map holds only addresses with requests in flight

    def check(self, address: str, exempt_address: bool, operator_request: bool) -> None:
        """Refuse a request (already counted by `enter`) beyond the request limits: the total
        always (an `operator_request` may go operator_reserved_requests beyond it, like
        PostgreSQL's superuser_reserved_connections), the per-address one unless
        `exempt_address` (an exempt address or a superuser)."""
        limit = self.settings.max_requests_in_flight
        reserve = self.settings.operator_reserved_requests if operator_request else 0
        if self.in_flight > limit + reserve:
            metrics.HTTP_REJECTED.labels("in_flight_limit").inc()
            raise TooManyRequests(f"more than {limit} requests in flight; retry shortly")
        limit = self.settings.max_requests_in_flight_per_address
        if not exempt_address and self.by_address[address] > limit:
            metrics.HTTP_REJECTED.labels("address_in_flight_limit").inc()
            raise TooManyRequests(
                f"more than {limit} requests in flight from {address} "
                "(max_requests_in_flight_per_address); retry when some are answered"
            )

    def reserve_body(self, size: int) -> None:
        limit = self.settings.max_body_bytes_in_flight
        if self.body_bytes + size > limit:
            metrics.HTTP_REJECTED.labels("body_bytes_in_flight_limit").inc()
            raise Unavailable(
                f"request bodies in flight would exceed {limit} bytes (max_body_bytes_in_flight); retry shortly",
                retry_after_s=BODY_MEMORY_RETRY_AFTER_S,
            )
        self.body_bytes += size


class RsgiAdapter:
    """One listener's entry point. The operator listener's requests (`operator`) are not held
    to the request limits: its own connection cap (operator_max_connections) bounds them."""

    def __init__(self, app: App, admission: Admission, operator: bool = False) -> None:
        self.app = app
        self.admission = admission
        self.operator = operator
        self._open_paths = app.router.open_paths
        self.body_timeout_s = app.settings.http_body_timeout_ms / 1000
        self.deadlines = BodyDeadlines(self.body_timeout_s)

    def _body_limit(self, method: str, path: str) -> int:
        settings = self.app.settings
        if path == LOGIN_PATH:
            return min(settings.max_login_body_bytes, settings.max_body_bytes)  # a name and a password
        # A PUT body is one value; other bodies are JSON documents (transactions, admin).
        return settings.max_value_bytes if method == "PUT" else settings.max_body_bytes

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        address = client_address(scope.client)
        admission = self.admission
        admission.enter(address)
        reserved = 0
        try:
            refusal, reserved, principal = self._admit(scope, address)
            if principal is not None:
                admission.connections.note(scope.client, principal.roles)
            if refusal is not None:
                await self._refuse(proto, refusal, scope.headers)
                return
            await self._serve(scope, proto, reserved, principal)
        finally:
            admission.leave(address, reserved)

    def _admit(self, scope: Any, address: str) -> tuple[Response | None, int, Principal | None]:
        """From the headers alone: a refusal, or the body bytes reserved for this request and
        who sent it (None on the open routes)."""
        method, path, headers = scope.method, scope.path, scope.headers
        declared = None
        if method in _BODY_METHODS:
            declared = headers.get("content-length")
            rejection = self._check_length(declared, headers.get("transfer-encoding"), method, path)
            if rejection is not None:
                return rejection, 0, None
        try:
            principal = self._authenticate(path, headers.get("authorization"), address)
            if not self.operator:  # the operator listener's own connection cap bounds its requests
                superuser = principal is not None and principal.superuser
                operator_request = path in _PROBE_PATHS or (superuser and path.startswith(_ADMIN_PREFIX))
                self.admission.check(address, superuser or address in self.admission.exempt, operator_request)
            size = int(declared) if declared else 0
            self.admission.reserve_body(size)
        except KvError as error:
            return error_response(error), 0, None
        return None, size, principal

    def _authenticate(self, path: str, authorization: str | None, address: str) -> Principal | None:
        """Every route but the open ones needs credentials: check them before the body is read.
        Before recovery is done there is no authenticator; the app answers 503 then."""
        if path in self._open_paths or not self.app.node.ready:
            return None
        return self.app.auth.authenticate(authorization, address)

    async def _serve(self, scope: Any, proto: Any, size: int, principal: Principal | None) -> None:
        body = b""
        if size:
            deadlines = self.deadlines
            task: Any = asyncio.current_task()
            tick = deadlines.start(task)
            try:
                body = await proto()
            except asyncio.CancelledError:
                if not deadlines.expired(task):
                    raise
                metrics.HTTP_REJECTED.labels("body_timeout").inc()
                timeout_ms = self.app.settings.http_body_timeout_ms
                error: KvError = RequestTimeout(
                    f"the {size}-byte body did not arrive within {timeout_ms} ms (http_body_timeout_ms)"
                )
                self._respond_closing(proto, error_response(error))
                return
            except ProtocolClosed:
                # A half-close before the announced length: never store, never answer an empty 500.
                metrics.HTTP_REJECTED.labels("body_incomplete").inc()
                error = IncompleteBody(f"the connection ended before the {size}-byte body announced was sent")
                self._respond_closing(proto, error_response(error))
                return
            finally:
                deadlines.finish(tick, task)
        request = Request(
            scope.method, scope.path, scope.query_string, scope.headers, body, scope.client, scope.server, principal
        )
        response = await self.app.handle(request)
        if isinstance(response, StreamResponse):
            await self._stream(proto, response)
        else:
            proto.response_bytes(response.status, response.headers, response.body)

    def _check_length(
        self, declared: str | None, transfer_encoding: str | None, method: str, path: str
    ) -> Response | None:
        """Refuse a body before reading it: no length, or a length above the limit."""
        if declared is None:
            if transfer_encoding is None:
                return None  # no body at all
            metrics.HTTP_REJECTED.labels("length_required").inc()
            # A chunked upload cut short by a disconnect reaches the app looking complete;
            # requiring Content-Length means a partial value can never be stored.
            return error_response(LengthRequired("send Content-Length; chunked request bodies are not accepted"))
        limit = self._body_limit(method, path)
        if not declared.isdigit() or int(declared) > limit:
            metrics.HTTP_REJECTED.labels("body_too_large").inc()
            return error_response(
                PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}", limit_bytes=limit)
            )
        return None

    async def _refuse(self, proto: Any, refusal: Response, headers: Any) -> None:
        """Answer a refusal made from the headers. A body too large is drained (so a client still
        sending it reads our 413 rather than a reset) while that is cheap; any other refused body
        stays unread: the connection closes, and says so (RFC 9112 9.6), or a client reusing it
        races the server's close."""
        declared = headers.get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        no_body = (declared is None or size == 0) and headers.get("transfer-encoding") is None
        too_large = refusal.status == PayloadTooLarge.status and size is not None and size <= MAX_DRAIN_BYTES
        if no_body or (too_large and await self._discard_body(proto)):
            proto.response_bytes(refusal.status, refusal.headers, refusal.body)
        else:
            self._respond_closing(proto, refusal)

    @staticmethod
    def _respond_closing(proto: Any, response: Response) -> None:
        response.headers.append(("connection", "close"))
        with contextlib.suppress(ProtocolClosed, RuntimeError):  # a client gone entirely: nobody to answer
            proto.response_bytes(response.status, response.headers, response.body)

    async def _discard_body(self, proto: Any) -> bool:
        """Read and drop a refused body, chunk by chunk, within the body timeout; False when it
        did not all come (the connection must close then)."""

        async def drain() -> None:
            async for _chunk in proto:
                pass

        try:
            await asyncio.wait_for(drain(), self.body_timeout_s)
        except (ProtocolClosed, TimeoutError):
            return False
        return True

    @staticmethod
    async def _stream(proto: Any, response: StreamResponse) -> None:
        transport = proto.response_stream(response.status, response.headers)
        chunks = response.chunks
        try:
            async for chunk in chunks:
                await transport.send_bytes(chunk)
        except (ProtocolClosed, OSError, RuntimeError) as gone:
            log.debug("stream client went away", extra={"reason": str(gone)})
        finally:
            await chunks.aclose()
