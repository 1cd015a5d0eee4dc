"""The streaming section: does a streaming handler notice a client that went away (granian's embedded
RSGI server, uvicorn's ASGI), and two lifecycle facts of the embedded server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kvstore.chaos.launcher import free_port

from .apps import HOST, AsgiReceive, AsgiScope, AsgiSend

CHUNK_INTERVAL_S = 0.05
DISCONNECT_WINDOW_S = 1.5
LISTEN_TIMEOUT_S = 20.0


@dataclass
class StreamProbe:
    """Shared state between a streaming handler and the client driving it."""

    closed_at: float | None = None
    events: list[tuple[float, str]] = field(default_factory=list)
    sends_after_close: int = 0
    handler_done: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def sent(self) -> None:
        if self.closed_at is not None:
            self.sends_after_close += 1


@dataclass
class StreamCheck:
    """What the server-side handler observed after the client went away."""

    server: str
    mode: str
    detected: bool
    latency_ms: float | None
    sends_after_close: int
    observed: list[str]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


def rsgi_stream_app(probe: StreamProbe) -> Callable[[Any, Any], Awaitable[None]]:
    """RSGI handler: stream a chunk every 50 ms until told to stop or sending fails."""

    async def app(scope: Any, proto: Any) -> None:
        transport = proto.response_stream(200, [("content-type", "text/plain")])
        watcher: asyncio.Task[None] | None = None
        if scope.query_string == "watch":

            async def watch() -> None:
                await proto.client_disconnect()
                probe.record("await proto.client_disconnect() returned")

            watcher = asyncio.create_task(watch())
        try:
            while not probe.stop.is_set() and not (watcher and watcher.done()):
                await transport.send_bytes(b"tick\n")
                probe.sent()
                await asyncio.sleep(CHUNK_INTERVAL_S)
        except Exception as exc:
            probe.record(f"transport.send_bytes() raised {_describe(exc)}")
        finally:
            if watcher is not None:
                watcher.cancel()
            probe.handler_done.set()

    return app


def asgi_stream_app(probe: StreamProbe) -> Callable[[AsgiScope, AsgiReceive, AsgiSend], Awaitable[None]]:
    """ASGI handler: same stream; ``watch`` mode waits for ``http.disconnect`` via receive()."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) request body
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        watcher: asyncio.Task[None] | None = None
        if scope["query_string"] == b"watch":

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                probe.record("receive() returned {'type': 'http.disconnect'}")

            watcher = asyncio.create_task(watch())
        try:
            while not probe.stop.is_set() and not (watcher and watcher.done()):
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                probe.sent()
                await asyncio.sleep(CHUNK_INTERVAL_S)
        except Exception as exc:
            probe.record(f"send() raised {_describe(exc)}")
        finally:
            if watcher is not None:
                watcher.cancel()
            probe.handler_done.set()

    return app


async def open_stream(port: int, mode: str, chunks: int = 3) -> asyncio.StreamWriter:
    """Start a streaming GET and return once ``chunks`` chunks have arrived."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET /stream?{mode} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    await writer.drain()
    received = b""
    while received.count(b"tick") < chunks:
        data = await asyncio.wait_for(reader.read(4096), timeout=5)
        if not data:
            raise RuntimeError("stream ended early")
        received += data
    return writer


async def probe_disconnect(server: str, mode: str, port: int, probe: StreamProbe) -> StreamCheck:
    """Read a few chunks, close the socket, and see what the handler noticed."""
    writer = await open_stream(port, mode)
    writer.close()
    await writer.wait_closed()
    probe.closed_at = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(probe.handler_done.wait(), timeout=DISCONNECT_WINDOW_S)
    probe.stop.set()
    await asyncio.wait_for(probe.handler_done.wait(), timeout=5)
    latency = (probe.events[0][0] - probe.closed_at) * 1e3 if probe.events else None
    observed = [what for _, what in probe.events]
    if not observed:
        observed = [f"nothing within {DISCONNECT_WINDOW_S} s: every send() returned normally"]
    return StreamCheck(server, mode, bool(probe.events), latency, probe.sends_after_close, observed)


def _embedded_server(app: Callable[[Any, Any], Awaitable[None]], port: int) -> Any:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    return Server(app, address=HOST, port=port, interface=Interfaces.RSGI, runtime_threads=2, log_enabled=False)


async def check_granian_embedded() -> list[StreamCheck]:
    checks: list[StreamCheck] = []
    for mode in ("send", "watch"):
        probe = StreamProbe()
        port = free_port()
        server = _embedded_server(rsgi_stream_app(probe), port)
        serving = asyncio.create_task(server.serve())
        try:
            await _wait_listening(port)
            checks.append(await probe_disconnect("granian-embed (RSGI)", mode, port, probe))
        finally:
            server.stop()
            await serving
    return checks


async def check_uvicorn_asgi() -> list[StreamCheck]:
    import uvicorn

    checks: list[StreamCheck] = []
    for mode in ("send", "watch"):
        probe = StreamProbe()
        port = free_port()
        config = uvicorn.Config(
            asgi_stream_app(probe), host=HOST, port=port, http="httptools", lifespan="off", log_level="warning"
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            await _wait_listening(port)
            checks.append(await probe_disconnect("uvicorn (raw ASGI)", mode, port, probe))
        finally:
            server.should_exit = True
            await serving
    return checks


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


def _tagged_app(tag: bytes, probe: StreamProbe) -> Callable[[Any, Any], Awaitable[None]]:
    """``/stream`` -> :func:`rsgi_stream_app`; any other path -> 200 with ``tag``."""
    stream = rsgi_stream_app(probe)

    async def app(scope: Any, proto: Any) -> None:
        if scope.path == "/stream":
            await stream(scope, proto)
        else:
            proto.response_bytes(200, [], tag)

    return app


async def _answered_by(port: int, requests: int) -> dict[str, int]:
    """Which server (by tag) answered each of ``requests`` fresh connections."""
    counts: dict[str, int] = {}
    for _ in range(requests):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(f"GET /who HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        tag = (await reader.read()).rsplit(b"\r\n\r\n", 1)[-1].decode()
        counts[tag] = counts.get(tag, 0) + 1
        writer.close()
        await writer.wait_closed()
    return counts


async def check_embedded_lifecycle() -> list[str]:
    """Two operational facts of ``granian.server.embed.Server``, observed live."""
    facts: list[str] = []
    probe = StreamProbe()
    port = free_port()
    server = _embedded_server(_tagged_app(b"first", probe), port)
    serving = asyncio.create_task(server.serve())
    await _wait_listening(port)

    second = _embedded_server(_tagged_app(b"second", StreamProbe()), port)
    second_serving = asyncio.create_task(second.serve())
    await asyncio.sleep(0.5)
    if second_serving.done():
        facts.append(f"second Server on the same port: serve() failed ({second_serving.exception()!r})")
    else:
        counts = await _answered_by(port, 20)
        facts.append(
            "second Server on the same port: no error, it binds too (SO_REUSEPORT) and the kernel "
            f"splits new connections between them: 20 connections answered by {counts}"
        )
        second.stop()
        await second_serving

    writer = await open_stream(port, "send")
    started = time.monotonic()
    server.stop()
    done, _ = await asyncio.wait({serving}, timeout=2)
    if done:
        facts.append(f"Server.stop() with a stream open: serve() returned after {time.monotonic() - started:.2f} s")
    else:
        probe.stop.set()
        await serving
        facts.append(
            "Server.stop() with a stream open: serve() had NOT returned after 2 s (graceful shutdown waits "
            f"for open responses); it returned {time.monotonic() - started:.2f} s after stop() once the app "
            "ended its stream"
        )
    writer.close()
    return facts


@dataclass
class StreamingReport:
    """Everything ``--check-streaming`` found."""

    checks: list[StreamCheck]
    embedded_lifecycle: list[str]


async def _run_streaming() -> StreamingReport:
    checks = await check_granian_embedded() + await check_uvicorn_asgi()
    return StreamingReport(checks, await check_embedded_lifecycle())


def run_streaming() -> StreamingReport:
    import uvloop

    return uvloop.run(_run_streaming())
