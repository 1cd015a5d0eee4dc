"""Serving the App over granian's RSGI interface: body limits, responses, streaming.

RSGI (granian's native interface) was picked by measurement over ASGI servers; see
cli/bench/RESULTS-bakeoff.md. A streaming response notices a departed client when
`send_bytes` raises, which ends the stream's generator.
"""

from __future__ import annotations

import logging
from typing import Any

from granian.rsgi import ProtocolClosed

from .. import metrics
from ..errors import LengthRequired, PayloadTooLarge, TooManyRequests
from .app import App
from .http import Request, Response, StreamResponse, error_response

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset(("PUT", "POST", "PATCH"))
# A refused body up to this size is read and dropped so the client gets a clean 413; a
# larger one is not worth the bandwidth, and that client may see a reset instead.
MAX_DRAIN_BYTES = 64 * 1024 * 1024


class RsgiAdapter:
    def __init__(self, app: App) -> None:
        self.app = app
        self.in_flight = 0  # admitted requests, body reading included
        metrics.bind_gauge(metrics.HTTP_REQUESTS_IN_FLIGHT, lambda: self.in_flight)

    def _body_limit(self, method: str) -> int:
        settings = self.app.settings
        # A PUT body is one value; other bodies are JSON documents (transactions, login).
        return settings.max_value_bytes if method == "PUT" else settings.max_body_bytes

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        # Admission comes first: a refused request never gets its body buffered.
        limit = self.app.settings.max_requests_in_flight
        if self.in_flight >= limit:
            metrics.HTTP_REJECTED.labels("in_flight_limit").inc()
            refusal = error_response(TooManyRequests(f"more than {limit} requests in flight; retry shortly"))
            proto.response_bytes(refusal.status, refusal.headers, refusal.body)
            return
        self.in_flight += 1
        try:
            await self._serve(scope, proto)
        finally:
            self.in_flight -= 1

    async def _serve(self, scope: Any, proto: Any) -> None:
        method = scope.method
        headers = scope.headers
        body = b""
        if method in _BODY_METHODS:
            declared = headers.get("content-length")
            rejection = self._check_length(declared, headers.get("transfer-encoding"), method)
            if rejection is not None:
                if declared is not None and declared.isdigit() and int(declared) <= MAX_DRAIN_BYTES:
                    await self._discard_body(proto)
                else:
                    # The body stays unread, so this connection cannot carry another request:
                    # say so (RFC 9112 9.6), or a client reusing it races the server's close.
                    rejection.headers.append(("connection", "close"))
                proto.response_bytes(rejection.status, rejection.headers, rejection.body)
                return
            try:
                body = await proto()
            except ProtocolClosed:
                log.debug("client went away during the request body", extra={"path": scope.path})
                return
        request = Request(method, scope.path, scope.query_string, headers, body, scope.client)
        response = await self.app.handle(request)
        if isinstance(response, StreamResponse):
            await self._stream(proto, response)
        else:
            proto.response_bytes(response.status, response.headers, response.body)

    def _check_length(self, declared: str | None, transfer_encoding: str | None, method: str) -> Response | None:
        """Refuse a body before reading it: no length, or a length above the limit."""
        if declared is None:
            if transfer_encoding is None:
                return None  # no body at all
            metrics.HTTP_REJECTED.labels("length_required").inc()
            # A chunked upload cut short by a disconnect reaches the app looking complete;
            # requiring Content-Length means a partial value can never be stored.
            return error_response(LengthRequired("send Content-Length; chunked request bodies are not accepted"))
        limit = self._body_limit(method)
        if not declared.isdigit() or int(declared) > limit:
            metrics.HTTP_REJECTED.labels("body_too_large").inc()
            return error_response(
                PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}", limit_bytes=limit)
            )
        return None

    @staticmethod
    async def _discard_body(proto: Any) -> None:
        """Read and drop a refused body, chunk by chunk: a client still sending it would
        otherwise see the connection reset instead of our 413."""
        try:
            async for _chunk in proto:
                pass
        except ProtocolClosed:
            pass  # the client gave up first: nothing to answer

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
            await chunks.aclose()  # type: ignore[attr-defined]
