"""HTTP server bake-off for the KVStore++ node, measured on this machine.

What it measures
----------------
``http``
    Each candidate server runs the SAME tiny in-memory key-value app
    (:mod:`kvstore.cli.bench.bakeoff_apps`) in a subprocess on 127.0.0.1 and a
    free port. The script waits for it, checks the app answers correctly
    (PUT 200 + ``{"ok":true}``, GET returns the value, unknown key 404), then
    runs ``wrk -t1 -cN --latency`` against it for two scenarios:

    * ``GET``: ``GET /kv/bench-key`` of a stored 100-byte value;
    * ``PUT``: ``PUT /kv/k<n % 10000>`` with a 100-byte body (a wrk Lua script).

    Each scenario gets a short warm-up run, then is measured ``--repeats``
    times, each run after waiting (up to ``--quiet-wait`` s) for other work on
    the machine to go quiet; the run with the most requests/s is reported (the
    machine has 2 cores, shared by wrk, the server and whatever else is
    running). Reported: requests/s, latency p50/p99, wrk errors, the CPU other
    work used during each run (from /proc/stat minus our own processes), and
    the server's process count, thread count and RSS after the load. The
    server is always stopped (SIGTERM to its process group, SIGKILL after a
    grace period).

``micro``
    ``timeit`` (best of 5 repeats, auto-ranged loop counts) of: PyJWT HS256
    decode of a small token, ``msgpack.packb`` of a small WAL-like record,
    ``google_crc32c.value`` of it (and both together), ``json.dumps`` vs
    ``orjson.dumps`` of a small dict.

``streaming``
    For granian's embedded server (RSGI) and uvicorn (raw ASGI), run in this
    process: a handler streams a chunk every 50 ms; a raw-socket client reads
    a few chunks and closes the connection. Mode ``send`` only keeps sending
    and records whether/when sending fails; mode ``watch`` also waits for the
    disconnect signal (RSGI ``await proto.client_disconnect()``, ASGI
    ``receive()`` -> ``http.disconnect``). It also checks two lifecycle facts of
    the embedded server: whether ``Server.stop()`` returns while a stream is
    still open, and whether a second server can bind the same port.

Usage
-----
``python -m kvstore.cli.bench.server_bakeoff [--duration S] [--connections N]``
runs all three sections and writes ``RESULTS-bakeoff.md`` next to this file;
``--check-streaming`` runs only the streaming check; ``--json`` prints the
results as JSON on stdout (human-readable output then goes to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kvstore.cli.bench import wrk
from kvstore.cli.bench.bakeoff_apps import HOST, PUT_OK, AsgiReceive, AsgiScope, AsgiSend
from kvstore.cli.launcher import free_port

HERE = Path(__file__).resolve().parent
RESULTS_PATH = HERE / "RESULTS-bakeoff.md"
APPS = "kvstore.cli.bench.bakeoff_apps"
WRK = "/usr/bin/wrk"
GET_KEY = "bench-key"
VALUE = b"v" * 100
PUT_LUA = """\
local n = 0
local body = string.rep("v", 100)
local headers = {["Content-Type"] = "application/octet-stream"}
request = function()
  n = n + 1
  return wrk.format("PUT", "/kv/k" .. (n % 10000), headers, body)
end
"""
PACKAGES = (
    "granian",
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "aiohttp",
    "PyJWT",
    "msgpack",
    "google-crc32c",
    "orjson",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_CORES = 0.25
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
CHUNK_INTERVAL_S = 0.05
DISCONNECT_WINDOW_S = 1.5

# --------------------------------------------------------------------------- http


@dataclass(frozen=True)
class Candidate:
    """One server under test: how to start it and what it is."""

    name: str
    description: str
    command: Callable[[int], list[str]]
    requires: str | None = None  # importable module needed, else the candidate is skipped


def _uvicorn(target: str, *extra: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", f"{APPS}:{target}", *extra,
            "--host", HOST, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip

    return command


def _granian(interface: str, target: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "granian", "--interface", interface,
            "--host", HOST, "--port", str(port),
            "--workers", "1", "--runtime-threads", "2", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning", f"{APPS}:{target}",
        ]  # fmt: skip

    return command


def _apps_main(server: str, *extra: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", APPS, server, "--port", str(port), *extra]

    return command


CANDIDATES: tuple[Candidate, ...] = (
    Candidate(
        "uvicorn-asgi",
        "uvicorn, raw ASGI callable, --loop uvloop --http httptools",
        _uvicorn("asgi_app"),
    ),
    Candidate(
        "granian-rsgi",
        "granian standalone, RSGI, 1 worker, --runtime-threads 2",
        _granian("rsgi", "rsgi_app"),
    ),
    Candidate(
        "granian-asgi",
        "granian standalone, raw ASGI callable, 1 worker, --runtime-threads 2",
        _granian("asgi", "asgi_app"),
    ),
    Candidate(
        "granian-embed-rt2",
        "granian embedded Server, RSGI, runtime_threads=2, uvloop, one process "
        "(embedded serve_async runs ONE single-threaded Rust runtime: runtime_threads has no effect)",
        _apps_main("granian-embed", "--runtime-threads", "2"),
    ),
    Candidate(
        "granian-embed-rt1",
        "granian embedded Server, RSGI, runtime_threads=1, uvloop, one process",
        _apps_main("granian-embed", "--runtime-threads", "1"),
    ),
    Candidate(
        "starlette-uvicorn",
        "Starlette on uvicorn, --loop uvloop --http httptools",
        _uvicorn("make_starlette_app", "--factory"),
        requires="starlette",
    ),
    Candidate(
        "aiohttp",
        "aiohttp web server on uvloop",
        _apps_main("aiohttp"),
        requires="aiohttp",
    ),
)


@dataclass
class WrkRun:
    """Parsed output of one wrk run."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    other_cpu_cores: float = 0.0  # CPU used meanwhile by everything but wrk, the server and this script


@dataclass
class Scenario:
    """All measured runs of one scenario; ``best`` is the one with most requests/s."""

    runs: list[WrkRun]

    @property
    def best(self) -> WrkRun:
        return max(self.runs, key=lambda run: run.requests_per_s)


@dataclass
class ServerResult:
    """Bake-off outcome for one candidate."""

    name: str
    description: str
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    processes: int = 0
    threads: int = 0
    rss_mib: float = 0.0
    skipped: str | None = None
    error: str | None = None


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def running_server(candidate: Candidate, port: int, log: TextIO) -> Iterator[subprocess.Popen[bytes]]:
    """Start the candidate in its own session, wait until it answers, always stop it."""
    proc = subprocess.Popen(candidate.command(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode} before answering")
            try:
                _request(port, "GET", "/kv/__ready__")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not answer within {READY_TIMEOUT_S:.0f} s") from None
                time.sleep(0.1)
        yield proc
    finally:
        _stop_process_group(proc)


def _stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it leads its own session); SIGKILL whatever lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    # granian standalone's worker process is in the same session and may outlive the parent briefly
    while (proc.poll() is None or _session_pids(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None or _session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _proc_stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat fields after the command name (index 0 is field 3, 'state')."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()


def _session_pids(session: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``session``."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = _proc_stat_fields(int(entry.name))
            if int(fields[3]) == session and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def _session_footprint(session: int) -> tuple[int, int, float]:
    """(processes, threads, RSS MiB) of every process in the server's session."""
    page = os.sysconf("SC_PAGE_SIZE")
    processes = threads = rss = 0
    for pid in _session_pids(session):
        with contextlib.suppress(OSError):
            threads += int(_proc_stat_fields(pid)[17])
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            processes += 1
    return processes, threads, rss / 2**20


def sanity_check(port: int) -> None:
    """Fail loudly if the server does not implement the KV contract."""
    status, body = _request(port, "PUT", f"/kv/{GET_KEY}", VALUE)
    if (status, body) != (200, PUT_OK):
        raise RuntimeError(f"PUT returned {status} {body[:80]!r}")
    status, body = _request(port, "GET", f"/kv/{GET_KEY}")
    if (status, body) != (200, VALUE):
        raise RuntimeError(f"GET returned {status} {body[:80]!r}")
    status, _ = _request(port, "GET", "/kv/no-such-key")
    if status != 404:
        raise RuntimeError(f"GET of a missing key returned {status}")


def parse_wrk(output: str) -> WrkRun:
    """Requests/s, p50/p99 and error counts from ``wrk --latency`` output (see wrk.py)."""
    parsed = wrk.parse(output)
    return WrkRun(
        requests_per_s=parsed.requests_per_s,
        p50_ms=parsed.p50_ms,
        p99_ms=parsed.p99_ms,
        requests=parsed.requests,
        non_2xx=parsed.non_2xx,
        socket_errors=parsed.socket_errors,
    )


def wrk_command(port: int, scenario: str, duration_s: float, connections: int, lua: Path) -> list[str]:
    """The exact wrk invocation for a scenario (``GET`` or ``PUT``)."""
    command = [WRK, "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "5s", "--latency"]
    if scenario == "PUT":
        return [*command, "-s", str(lua), f"http://{HOST}:{port}/kv/"]
    return [*command, f"http://{HOST}:{port}/kv/{GET_KEY}"]


def _machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (includes steal)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _own_cpu_s(session: int) -> float:
    """CPU seconds of the server's session, this script and its reaped children (wrk)."""
    total = 0.0
    for pid in _session_pids(session):
        with contextlib.suppress(OSError):
            utime, stime = _proc_stat_fields(pid)[11:13]
            total += (int(utime) + int(stime)) / CLK_TCK
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def wait_for_quiet(server_session: int, max_wait_s: float) -> None:
    """Before a measured run, wait (bounded) until other work uses less than QUIET_CORES."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        busy, own = _machine_busy_s(), _own_cpu_s(server_session)
        time.sleep(1.0)
        if (_machine_busy_s() - busy) - (_own_cpu_s(server_session) - own) < QUIET_CORES:
            return


def run_wrk(command: list[str], server_session: int) -> WrkRun:
    """Run wrk; also estimate how many cores other work on the machine used meanwhile."""
    started, busy, own = time.monotonic(), _machine_busy_s(), _own_cpu_s(server_session)
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    other = (_machine_busy_s() - busy) - (_own_cpu_s(server_session) - own)
    run = parse_wrk(completed.stdout)
    run.other_cpu_cores = max(0.0, other / (time.monotonic() - started))
    return run


def bench_candidate(candidate: Candidate, args: argparse.Namespace, lua: Path, out: TextIO) -> ServerResult:
    """Start, check, warm up and measure one candidate; the server is always stopped."""
    result = ServerResult(candidate.name, candidate.description)
    if candidate.requires and importlib.util.find_spec(candidate.requires) is None:
        result.skipped = f"`{candidate.requires}` is not installed (pip install {candidate.requires})"
        print(f"[{candidate.name}] skipped: {result.skipped}", file=out)
        return result
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        try:
            with running_server(candidate, port, log) as proc:
                sanity_check(port)
                for scenario in ("GET", "PUT"):
                    run_wrk(wrk_command(port, scenario, args.warmup, args.connections, lua), proc.pid)
                    runs = []
                    for _ in range(args.repeats):
                        wait_for_quiet(proc.pid, args.quiet_wait)
                        runs.append(
                            run_wrk(wrk_command(port, scenario, args.duration, args.connections, lua), proc.pid)
                        )
                    result.scenarios[scenario] = Scenario(runs)
                    rates = " / ".join(f"{r.requests_per_s:,.0f} (other CPU {r.other_cpu_cores:.2f})" for r in runs)
                    print(f"[{candidate.name}] {scenario}: {rates} req/s", file=out)
                result.processes, result.threads, result.rss_mib = _session_footprint(proc.pid)
        except (RuntimeError, ValueError, OSError, http.client.HTTPException, subprocess.CalledProcessError) as exc:
            log.seek(0)
            tail = "".join(log.readlines()[-5:]).strip()
            result.error = f"{type(exc).__name__}: {exc}" + (f" | server log: {tail}" if tail else "")
            print(f"[{candidate.name}] FAILED: {result.error}", file=out)
    return result


def run_http(args: argparse.Namespace, out: TextIO) -> list[ServerResult]:
    selected = [c for c in CANDIDATES if not args.only or c.name in args.only]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="kv-put-") as lua:
        lua.write(PUT_LUA)
        lua.flush()
        return [bench_candidate(candidate, args, Path(lua.name), out) for candidate in selected]


# -------------------------------------------------------------------------- micro


@dataclass
class MicroResult:
    """One timed operation."""

    name: str
    ns_per_op: float
    note: str = ""

    @property
    def ops_per_s(self) -> float:
        return 1e9 / self.ns_per_op


def time_op(op: Callable[[], object]) -> float:
    """Nanoseconds per call: best of 5 repeats of an auto-ranged (>= 0.2 s) loop."""
    timer = timeit.Timer(op)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=number)) / number * 1e9


def run_micro() -> list[MicroResult]:
    import google_crc32c
    import jwt
    import msgpack
    import orjson

    secret = "kvstore-bench-secret-0123456789abcdef"  # >= 32 bytes, as PyJWT wants for HS256
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "role": "writer", "iat": now, "exp": now + 3600}, secret, "HS256")
    record = {"op": "put", "key": "k1234", "value": VALUE, "lsn": 123_456_789, "ts": time.time_ns()}
    packed: bytes = msgpack.packb(record)
    small = {"ok": True, "key": "k1234", "lsn": 123_456_789, "role": "primary", "lag_ms": 1.25}

    return [
        MicroResult(
            "jwt.decode HS256",
            time_op(lambda: jwt.decode(token, secret, algorithms=["HS256"])),
            f"{len(token)}-char token, verifies signature + exp",
        ),
        MicroResult("msgpack.packb(record)", time_op(lambda: msgpack.packb(record)), f"{len(packed)} B out"),
        MicroResult(
            "google_crc32c.value(packed)",
            time_op(lambda: google_crc32c.value(packed)),
            f"{len(packed)} B in, implementation={google_crc32c.implementation}",
        ),
        MicroResult(
            "packb + crc32c",
            time_op(lambda: google_crc32c.value(msgpack.packb(record))),
            "one WAL-record encode",
        ),
        MicroResult("json.dumps(dict)", time_op(lambda: json.dumps(small)), "returns str"),
        MicroResult("json.dumps(dict).encode()", time_op(lambda: json.dumps(small).encode()), "bytes, like orjson"),
        MicroResult("orjson.dumps(dict)", time_op(lambda: orjson.dumps(small)), "returns bytes"),
    ]


# ---------------------------------------------------------------------- streaming


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
    deadline = time.monotonic() + READY_TIMEOUT_S
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


# ------------------------------------------------------------------------ report


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    """Date, machine, interpreter and package versions; ``loadavg_end`` is added at the end of the run."""
    wrk_banner = subprocess.run([WRK, "-v"], check=False, capture_output=True, text=True).stdout
    wrk_version = wrk_banner.split(" Copyright", 1)[0].strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version,
        "loadavg_start": os.getloadavg(),
        "versions": {name: _version(name) for name in PACKAGES},
    }


@dataclass
class BakeoffResults:
    """Everything one invocation measured."""

    facts: dict[str, Any]
    http: list[ServerResult]
    micro: list[MicroResult]
    streaming: StreamingReport


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def http_table(results: list[ServerResult]) -> list[str]:
    lines = [
        "| server | procs / threads | RSS MiB | GET req/s | GET p50 ms | GET p99 ms "
        "| PUT req/s | PUT p50 ms | PUT p99 ms | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        if result.skipped or result.error:
            status = f"skipped: {result.skipped}" if result.skipped else f"FAILED: {result.error}"
            status = " ".join(status.split()).replace("|", "\\|")
            lines.append(f"| {result.name} | | | | | | | | | {status} |")
            continue
        cells = [result.name, f"{result.processes} / {result.threads}", f"{result.rss_mib:.0f}"]
        notes = []
        for scenario in ("GET", "PUT"):
            best = result.scenarios[scenario].best
            cells += [f"{best.requests_per_s:,.0f}", _ms(best.p50_ms), _ms(best.p99_ms)]
            if best.non_2xx or best.socket_errors:
                notes.append(f"{scenario}: {best.non_2xx} non-2xx, {best.socket_errors} socket errors")
        lines.append("| " + " | ".join(cells) + f" | {'; '.join(notes)} |")
    return lines


def quiet_spread(results: list[ServerResult]) -> str:
    """The largest run-to-run spread among runs where other work stayed under QUIET_CORES."""
    spreads = []
    for result in results:
        for name, scenario in result.scenarios.items():
            rates = [run.requests_per_s for run in scenario.runs if run.other_cpu_cores < QUIET_CORES]
            if len(rates) > 1:
                spreads.append(((max(rates) - min(rates)) / max(rates), f"{result.name} {name}"))
    if not spreads:
        return "no scenario had two quiet runs"
    spread, where = max(spreads)
    return f"{spread:.0%} ({where})"


def runs_table(results: list[ServerResult]) -> list[str]:
    lines = [
        "| server | GET req/s (other CPU, cores), every run | PUT req/s (other CPU, cores), every run |",
        "|---|---|---|",
    ]
    for result in results:
        if result.scenarios:
            cells = [
                " / ".join(f"{run.requests_per_s:,.0f} ({run.other_cpu_cores:.2f})" for run in result.scenarios[s].runs)
                for s in ("GET", "PUT")
            ]
            lines.append(f"| {result.name} | {cells[0]} | {cells[1]} |")
    return lines


def micro_table(results: list[MicroResult]) -> list[str]:
    lines = ["| operation | ns/op | ops/s (1 core) | note |", "|---|---:|---:|---|"]
    lines += [f"| {r.name} | {r.ns_per_op:,.0f} | {r.ops_per_s:,.0f} | {r.note} |" for r in results]
    return lines


def streaming_table(report: StreamingReport) -> list[str]:
    lines = [
        "| server | mode | detected | after close (ms) | sends that 'succeeded' after close | observed |",
        "|---|---|---|---:|---:|---|",
    ]
    for c in report.checks:
        latency = f"{c.latency_ms:.0f}" if c.latency_ms is not None else "-"
        observed = "; ".join(f"`{o}`" for o in c.observed)
        lines.append(
            f"| {c.server} | {c.mode} | {'yes' if c.detected else 'NO'} | {latency} "
            f"| {c.sends_after_close} | {observed} |"
        )
    return lines


def render_markdown(results: BakeoffResults, command: str, args: argparse.Namespace) -> str:
    facts = results.facts
    candidates = [f"- **{r.name}**: {r.description}" for r in results.http]
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items())
    load = " -> ".join(" ".join(f"{x:.2f}" for x in la) for la in (facts["loadavg_start"], facts["loadavg_end"]))
    lines = [
        "# KVStore++ HTTP server bake-off",
        "",
        "Generated by `kvstore.cli.bench.server_bakeoff`; do not edit by hand, re-run the command instead.",
        "",
        f"- date: {facts['date']}",
        f"- command: `{command}`",
        f"- machine: nproc={facts['nproc']}, {facts['cpu']}, Linux {facts['kernel']}, load average {load}",
        f"- python {facts['python']}; {facts['wrk']}",
        f"- packages: {versions}",
        "",
        "## HTTP: same in-memory KV app on every server",
        "",
        f"`wrk -t1 -c{args.connections} -d{args.duration:g}s --timeout 5s --latency`, keep-alive, 127.0.0.1. "
        f"GET: `GET /kv/{GET_KEY}` (100-byte value). PUT: `PUT /kv/k<n % 10000>` with a 100-byte body "
        f"(wrk Lua script). Each scenario: {args.warmup:g} s warm-up, then {args.repeats} measured runs, each "
        f"after waiting up to {args.quiet_wait:g} s for other work on the machine to use < {QUIET_CORES} cores; "
        "**the table shows the better run** (most req/s) because wrk, the server and any other work share "
        "the machine's 2 cores. procs/threads/RSS: the server's whole process tree after the load.",
        "",
        *candidates,
        "",
        *http_table(results.http),
        "",
        "Every measured run, with the CPU that other work on the machine used meanwhile (total busy CPU "
        "minus wrk, the server and this script, averaged over the run, in cores out of 2):",
        "",
        *runs_table(results.http),
        "",
        f"Largest run-to-run spread between quiet runs (other CPU < {QUIET_CORES} cores): "
        f"{quiet_spread(results.http)}; differences smaller than that are noise on this machine.",
        "",
        "## Micro-benchmarks (timeit, best of 5)",
        "",
        *micro_table(results.micro),
        "",
        "## Streaming: does the handler notice a client that went away?",
        "",
        f"Handler streams `tick\\n` every {CHUNK_INTERVAL_S * 1e3:.0f} ms; a raw-socket client reads 3 chunks and "
        "closes. `send` = handler only keeps sending; `watch` = handler also awaits the disconnect signal. "
        f"Window: {DISCONNECT_WINDOW_S} s. Both servers run in the bake-off process on a uvloop loop.",
        "",
        *streaming_lines(results.streaming),
        "",
    ]
    return "\n".join(lines)


def streaming_lines(report: StreamingReport) -> list[str]:
    return [
        *streaming_table(report),
        "",
        "Embedded server lifecycle (granian `Server`, observed live):",
        "",
        *[f"- {fact}" for fact in report.embedded_lifecycle],
    ]


def to_json(results: BakeoffResults) -> str:
    def server(result: ServerResult) -> dict[str, Any]:
        data = asdict(result)
        data["best"] = {name: asdict(s.best) for name, s in result.scenarios.items()}
        return data

    return json.dumps(
        {
            "meta": results.facts,
            "http": [server(r) for r in results.http],
            "micro": [asdict(m) | {"ops_per_s": m.ops_per_s} for m in results.micro],
            "streaming": asdict(results.streaming),
        },
        indent=2,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvstore.cli.bench.server_bakeoff",
        description="HTTP server bake-off (+ micro-benchmarks and a streaming-disconnect check).",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk keep-alive connections (default 50)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per scenario (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="measured runs per scenario, best reported")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help=f"before each measured run, wait up to this many seconds for other work to use < {QUIET_CORES} cores",
    )
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CANDIDATES], help="candidates to run")
    parser.add_argument("--check-streaming", action="store_true", help="run only the streaming-disconnect check")
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_PATH, help=f"markdown report (default {RESULTS_PATH.name})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    facts = machine_facts()
    if args.check_streaming:
        results = BakeoffResults(facts, [], [], run_streaming())
        print("\n".join(streaming_lines(results.streaming)), file=out)
    else:
        per_server_s = 2 * (args.warmup + args.repeats * args.duration)
        print(f"== http ({len(args.only or CANDIDATES)} servers, ~{per_server_s:.0f} s each)", file=out)
        http = run_http(args, out)
        print("== micro", file=out)
        micro = run_micro()
        print("== streaming", file=out)
        results = BakeoffResults(facts, http, micro, run_streaming())
        print(
            "\n".join(["", *http_table(http), "", *micro_table(micro), "", *streaming_lines(results.streaming)]),
            file=out,
        )
        facts["loadavg_end"] = os.getloadavg()
        command = shlex.join(["python", "-m", "kvstore.cli.bench.server_bakeoff", *argv])
        args.output.write_text(render_markdown(results, command, args))
        print(f"\nwrote {args.output}", file=out)
    if args.json:
        print(to_json(results))


if __name__ == "__main__":
    main()
