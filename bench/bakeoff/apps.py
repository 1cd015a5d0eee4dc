"""The tiny in-memory key-value app used by the server bake-off, in every interface.

All adapters route to the same :func:`handle` function, so the only thing that
differs between candidates is the server (and, for Starlette/aiohttp, the
framework):

* ``GET /kv/<key>``  -> 200 with the stored value bytes, or 404.
* ``PUT /kv/<key>``  -> stores the request body, 200 with ``{"ok":true}``.
* anything else      -> 404 (unknown path) or 405 (other method).

Exposed targets:

* :func:`asgi_app` - raw ASGI callable (uvicorn, granian ``--interface asgi``).
* :func:`rsgi_app` - raw RSGI callable (granian ``--interface rsgi``/embedded).
* :func:`make_starlette_app` - Starlette factory (``uvicorn --factory``).

Servers that need a Python entry point are started with
``python -m bench.bakeoff.apps {granian-embed,aiohttp} --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

HOST = "127.0.0.1"
KV_PREFIX = "/kv/"
PUT_OK = b'{"ok":true}'
NOT_FOUND = b'{"error":"not found"}'
NOT_ALLOWED = b'{"error":"method not allowed"}'
OCTET = "application/octet-stream"
JSON = "application/json"

STORE: dict[str, bytes] = {}

AsgiScope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
AsgiReceive = Callable[[], Awaitable[AsgiMessage]]
AsgiSend = Callable[[AsgiMessage], Awaitable[None]]


def handle(method: str, key: str, body: bytes) -> tuple[int, bytes, str]:
    """The whole app: returns ``(status, body, content_type)``."""
    if method == "GET":
        value = STORE.get(key)
        if value is None:
            return 404, NOT_FOUND, JSON
        return 200, value, OCTET
    if method == "PUT":
        STORE[key] = body
        return 200, PUT_OK, JSON
    return 405, NOT_ALLOWED, JSON


def parse_key(path: str) -> str | None:
    """``/kv/<key>`` -> ``<key>``; ``None`` for any other path."""
    if path.startswith(KV_PREFIX) and len(path) > len(KV_PREFIX):
        return path[len(KV_PREFIX) :]
    return None


async def _asgi_lifespan(receive: AsgiReceive, send: AsgiSend) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _asgi_body(receive: AsgiReceive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def asgi_app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
    """Raw ASGI 3 adapter (no framework)."""
    if scope["type"] == "lifespan":
        await _asgi_lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    key = parse_key(scope["path"])
    if key is None:
        status, payload, content_type = 404, NOT_FOUND, JSON
    else:
        method = scope["method"]
        body = await _asgi_body(receive) if method == "PUT" else b""
        status, payload, content_type = handle(method, key, body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def rsgi_app(scope: Any, proto: Any) -> None:
    """Raw RSGI adapter (granian's native interface)."""
    if scope.proto != "http":
        return
    key = parse_key(scope.path)
    if key is None:
        status, payload, content_type = 404, NOT_FOUND, JSON
    else:
        method = scope.method
        body = await proto() if method == "PUT" else b""
        status, payload, content_type = handle(method, key, body)
    proto.response_bytes(status, [("content-type", content_type)], payload)


def make_starlette_app() -> Starlette:
    """Starlette app with the same routes (served by ``uvicorn --factory``)."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def kv(request: Request) -> Response:
        body = await request.body() if request.method == "PUT" else b""
        status, payload, content_type = handle(request.method, request.path_params["key"], body)
        return Response(payload, status_code=status, media_type=content_type)

    return Starlette(routes=[Route("/kv/{key:path}", kv, methods=["GET", "PUT"])])


async def serve_granian_embedded(port: int, runtime_threads: int) -> None:
    """Run :func:`rsgi_app` on granian's embedded server in this very process.

    The embedded server installs no signal handlers of its own, and
    ``Server.stop()`` sets an ``asyncio.Event``, so it must run on the loop
    thread: hook it up with ``loop.add_signal_handler``.
    """
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        rsgi_app,
        address=HOST,
        port=port,
        interface=Interfaces.RSGI,
        runtime_threads=runtime_threads,
        log_access=False,
        log_level=LogLevels.warning,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    await server.serve()


def serve_aiohttp(port: int) -> None:
    """Run the same app on aiohttp's own server, on a uvloop event loop."""
    import uvloop
    from aiohttp import web

    async def kv(request: web.Request) -> web.Response:
        body = await request.read() if request.method == "PUT" else b""
        status, payload, content_type = handle(request.method, request.match_info["key"], body)
        return web.Response(body=payload, status=status, content_type=content_type)

    app = web.Application()
    app.router.add_route("GET", "/kv/{key:.+}", kv)
    app.router.add_route("PUT", "/kv/{key:.+}", kv)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


def main() -> None:
    """Entry point for the servers that are started from Python code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("server", choices=["granian-embed", "aiohttp"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime-threads", type=int, default=2, help="granian-embed only")
    args = parser.parse_args()
    if args.server == "granian-embed":
        import uvloop

        uvloop.run(serve_granian_embedded(args.port, args.runtime_threads))
    else:
        serve_aiohttp(args.port)


if __name__ == "__main__":
    main()
