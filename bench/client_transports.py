"""Client transports against one node: which HTTP client can drive it from Python.

    python -m bench.client_transports [--seconds 5] [--write]

Starts one kvstored (fsync=always, the default), fills 1,000 keys with 100-byte values, then
for each transport x op (GET, PUT of 100 bytes) x concurrency (1, 50) runs closed-loop
requests for --seconds and reports req/s and p50/p99 latency:
- httpx.AsyncClient, one client, default pool limits (100 connections, 20 kept alive);
- httpx.AsyncClient, one client, limits raised to 100 connections all kept alive;
- aiohttp.ClientSession, one session (connector limit 100), on asyncio's loop and on uvloop;
- httpx.Client sync, one client per thread (concurrency 1: 1 thread; 50: 50 threads).
Prints a table; --write also writes bench/results/RESULTS-client-transports.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import uvloop

from kvstore.chaos.launcher import NodeLauncher

from .paths import results_file
from .stats import percentile

KEYS = 1000
VALUE = b"x" * 100
ADMIN_PASSWORD = "bench-password"
CONCURRENCIES = (1, 50)
OPS = ("GET", "PUT")
RESULTS_PATH = results_file("client-transports")
# httpx's documented default pool, and one that keeps every connection of 50 concurrent requests.
HTTPX_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
RAISED_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)


@dataclass(frozen=True, slots=True)
class Cell:
    transport: str
    op: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    def row(self) -> str:
        rate = self.requests / self.seconds
        p50, p99 = (1000 * percentile(self.latencies, f) for f in (0.5, 0.99))
        return f"| {self.transport} | {self.op} | {self.concurrency} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {self.errors} |"


# One request: the op and the key number; returns the HTTP status.
AsyncSend = Callable[[str, int], Awaitable[int]]


async def _closed_loop(send: AsyncSend, op: str, concurrency: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        key = offset
        while time.monotonic() < end:
            key = (key + concurrency) % KEYS
            start = time.monotonic()
            status = await send(op, key)
            latencies.append(time.monotonic() - start)
            errors += status >= 400

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, errors


async def _httpx_async(
    url: str, headers: dict[str, str], op: str, concurrency: int, seconds: float, raised: bool
) -> tuple[list[float], int]:
    limits = RAISED_LIMITS if raised else HTTPX_DEFAULT_LIMITS
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def send(op: str, key: int) -> int:
            if op == "GET":
                return (await client.get(f"/v1/kv/k{key}")).status_code
            return (await client.put(f"/v1/kv/k{key}", content=VALUE)).status_code

        return await _closed_loop(send, op, concurrency, seconds)


async def _aiohttp(
    url: str, headers: dict[str, str], op: str, concurrency: int, seconds: float
) -> tuple[list[float], int]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(url, headers=headers, timeout=timeout, connector=connector) as session:

        async def send(op: str, key: int) -> int:
            if op == "GET":
                async with session.get(f"/v1/kv/k{key}") as response:
                    await response.read()
                    return response.status
            async with session.put(f"/v1/kv/k{key}", data=VALUE) as response:
                await response.read()
                return response.status

        return await _closed_loop(send, op, concurrency, seconds)


def _httpx_threads(
    url: str, headers: dict[str, str], op: str, concurrency: int, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []  # list.append is atomic under the GIL
    errors = [0] * concurrency
    end = time.monotonic() + seconds

    def worker(index: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            key = index
            while time.monotonic() < end:
                key = (key + concurrency) % KEYS
                start = time.monotonic()
                if op == "GET":
                    status = client.get(f"/v1/kv/k{key}").status_code
                else:
                    status = client.put(f"/v1/kv/k{key}", content=VALUE).status_code
                latencies.append(time.monotonic() - start)
                errors[index] += status >= 400

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, sum(errors)


def _transports(url: str, headers: dict[str, str]) -> dict[str, Callable[[str, int, float], tuple[list[float], int]]]:
    return {
        "httpx async, default limits": lambda op, c, s: asyncio.run(_httpx_async(url, headers, op, c, s, False)),
        "httpx async, 100 keep-alive": lambda op, c, s: asyncio.run(_httpx_async(url, headers, op, c, s, True)),
        "aiohttp": lambda op, c, s: asyncio.run(_aiohttp(url, headers, op, c, s)),
        "aiohttp + uvloop": lambda op, c, s: uvloop.run(_aiohttp(url, headers, op, c, s)),
        "httpx sync, 1 client per thread": lambda op, c, s: _httpx_threads(url, headers, op, c, s),
    }


def _fill(url: str, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        ops = [{"op": "set", "key": f"k{i}", "value": VALUE.decode()} for i in range(KEYS)]
        client.post("/v1/txn", json={"ops": ops}).raise_for_status()


def run(seconds: float) -> list[Cell]:
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="kvbench-") as folder:
        node = NodeLauncher(Path(folder) / "node", ADMIN_PASSWORD)
        try:
            node.start()
            headers = {"authorization": f"Bearer {node.token()}"}
            _fill(node.url, headers)
            for name, measure in _transports(node.url, headers).items():
                for op in OPS:
                    for concurrency in CONCURRENCIES:
                        start = time.monotonic()
                        latencies, errors = measure(op, concurrency, seconds)
                        cell = Cell(name, op, concurrency, len(latencies), errors, time.monotonic() - start, latencies)
                        print(cell.row(), flush=True)
                        cells.append(cell)
        finally:
            node.close()
    return cells


def report(cells: list[Cell], seconds: float, load: float) -> str:
    header = (
        f"{seconds:g} s per cell, closed loop, 100-byte values, {KEYS} keys, one kvstored (fsync=always) on "
        f"127.0.0.1, client and node on the same machine; {os.cpu_count()} cores (1-minute load average "
        f"{load:.2f} at the start), Python {platform.python_version()}, httpx {httpx.__version__}, "
        f"aiohttp {aiohttp.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    lines = [
        "| transport | op | concurrency | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(cell.row() for cell in cells),
    ]
    return "\n".join([header, "", *lines]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per cell (default 5)")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS_PATH.name}")
    args = parser.parse_args()
    load = os.getloadavg()[0]  # other work on the machine shows in every number
    print("| transport | op | concurrency | req/s | p50 ms | p99 ms | errors |")
    cells = run(args.seconds)
    text = report(cells, args.seconds, load)
    print()
    print(text)
    if args.write:
        RESULTS_PATH.write_text(
            "# Client transports against one node\n\n`python -m bench.client_transports --write`\n\n" + text
        )


if __name__ == "__main__":
    main()
