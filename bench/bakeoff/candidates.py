"""The servers of the bake-off: each runs the same app (apps.py) in its own way."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from .apps import HOST

APPS = "bench.bakeoff.apps"


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
