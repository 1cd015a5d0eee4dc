"""The HTTP section: each candidate server started, checked, warmed up and measured with wrk."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from kvstore.chaos.launcher import free_port

from .. import wrk
from ..paths import REPOSITORY
from . import procfs
from .apps import HOST, PUT_OK
from .candidates import CANDIDATES, Candidate

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
QUIET_CORES = 0.25
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0


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
    # From the repository, where `bench.bakeoff.apps` is importable.
    proc = subprocess.Popen(
        candidate.command(port), cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
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
    while (proc.poll() is None or procfs.session_pids(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None or procfs.session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


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


def wait_for_quiet(server_session: int, max_wait_s: float) -> None:
    """Before a measured run, wait (bounded) until other work uses less than QUIET_CORES."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        busy, own = procfs.machine_busy_s(), procfs.own_cpu_s(server_session)
        time.sleep(1.0)
        if (procfs.machine_busy_s() - busy) - (procfs.own_cpu_s(server_session) - own) < QUIET_CORES:
            return


def run_wrk(command: list[str], server_session: int) -> WrkRun:
    """Run wrk; also estimate how many cores other work on the machine used meanwhile."""
    started, busy, own = time.monotonic(), procfs.machine_busy_s(), procfs.own_cpu_s(server_session)
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    other = (procfs.machine_busy_s() - busy) - (procfs.own_cpu_s(server_session) - own)
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
                result.processes, result.threads, result.rss_mib = procfs.session_footprint(proc.pid)
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
