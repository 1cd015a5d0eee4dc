"""Flood benchmark: another client's GET and PUT latency while one address floods the node.

    python -m bench.flood [--connections 5000] [--requests 2000] [--write]

Starts one kvstored (default settings, fsync=always) on 127.0.0.1 and measures a client's
GET and PUT latency (p50/p99/max, sequential requests on one keep-alive connection) when
quiet, then under each flood, sent from 127.0.0.2 (another address as far as the node's
per-address limits go) by a separate process so the flood never shares the measuring
client's event loop:
- idle: N connections that send nothing (reopened when the node drops them);
- stalled: N connections that send a writer's PUT headers with Content-Length and no body, each
  reopened at once when the node refuses it (429) or times it out (408): a connection storm;
- stalled-once: the same N connections, not reopened;
- logins: 200 concurrent wrong-password logins for one user, in a loop;
- listings: 4 clients with a grant on app:* listing prefix=zz over 100,000 keys they cannot see.
Prints a table and, with --write, writes bench/results/RESULTS-flood.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from kvstore.chaos.launcher import NodeLauncher

from .paths import REPOSITORY, results_file
from .stats import percentile

ADMIN_PASSWORD = "bench-admin-password"
USER_PASSWORD = "bench-user-password"
FLOOD_ADDRESS = "127.0.0.2"
HIDDEN_KEYS = 100_000
RESULTS_PATH = results_file("flood")
FLOODS = ("quiet", "idle", "stalled", "stalled-once", "logins", "listings")


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the flooding process ------------------------------------------------------------------


async def _hold(port: int, opening: bytes, held: list[int], gate: asyncio.Semaphore, reopen: bool) -> None:
    """One connection slot: connect, send `opening`, wait for the node to close it, repeat.
    held[0]: connections open now; held[1]: connections ever opened."""
    while True:
        async with gate:  # bound concurrent connects so the accept queue is not the bottleneck
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(FLOOD_ADDRESS, 0))
            except OSError:
                await asyncio.sleep(0.05)
                continue
        held[0] += 1
        held[1] += 1
        try:
            if opening:
                writer.write(opening)
            while await reader.read(65536):
                pass
        except OSError:
            pass
        finally:
            held[0] -= 1
            writer.close()
        if not reopen:
            await asyncio.Event().wait()  # this slot is done: keep the flood process alive


async def _requests(url: str, method: str, path: str, concurrency: int, **kwargs: Any) -> None:
    async with httpx.AsyncClient(
        base_url=url,
        timeout=60,
        transport=httpx.AsyncHTTPTransport(local_address=FLOOD_ADDRESS),
        limits=httpx.Limits(max_connections=concurrency),
    ) as client:

        async def loop() -> None:
            while True:
                try:
                    await client.request(method, path, **kwargs)
                except httpx.HTTPError:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(loop() for _ in range(concurrency)))


async def flood(kind: str, port: int, connections: int, token: str) -> None:
    url = f"http://127.0.0.1:{port}"
    if kind in ("idle", "stalled", "stalled-once"):
        opening = b""
        if kind.startswith("stalled"):
            opening = (
                f"PUT /v1/kv/app:stalled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Content-Length: 100\r\n\r\n"
            ).encode()
        held = [0, 0]
        gate = asyncio.Semaphore(256)
        tasks = [
            asyncio.create_task(_hold(port, opening, held, gate, kind != "stalled-once")) for _ in range(connections)
        ]
        while held[1] < connections:  # every slot connected once (the node may have closed some)
            await asyncio.sleep(0.1)
        print("ready", held[0], "open", flush=True)
        await asyncio.gather(*tasks)
    elif kind == "logins":
        print("ready", flush=True)
        body = {"username": "lister", "password": "wrong-password"}
        await _requests(url, "POST", "/v1/auth/login", 200, json=body)
    elif kind == "listings":
        print("ready", flush=True)
        headers = {"authorization": f"Bearer {token}"}
        await _requests(url, "GET", "/v1/kv", 4, params={"prefix": "zz", "limit": 1}, headers=headers)


# -- the measuring process -----------------------------------------------------------------


def measure(url: str, token: str, requests: int) -> dict[str, Any]:
    """Sequential GETs then PUTs on one keep-alive connection; latencies in ms."""
    result: dict[str, Any] = {}
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60, limits=httpx.Limits(max_connections=1)) as client:
        for op in ("GET", "PUT"):
            samples = []
            errors = 0
            for index in range(requests):
                started = time.perf_counter()
                if op == "GET":
                    response = client.get(f"/v1/kv/bench:{index % 100}")
                else:
                    response = client.put(f"/v1/kv/bench:{index % 100}", content=b"v" * 100)
                samples.append((time.perf_counter() - started) * 1000)
                errors += response.status_code >= 400
            result[op] = {
                "p50": statistics.median(samples),
                "p99": percentile(samples, 0.99),
                "max": max(samples),
                "errors": errors,
            }
    return result


def vm_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def prepare(node: NodeLauncher) -> tuple[str, str]:
    """Users, keys and tokens: (the flood's token, the measuring client's token)."""
    with httpx.Client(base_url=node.url, headers={"authorization": f"Bearer {node.token()}"}, timeout=120) as admin:
        grants = [{"actions": ["read", "write"], "pattern": "app:*"}]
        admin.post("/v1/admin/roles", json={"name": "app-rw", "grants": grants}).raise_for_status()
        admin.post(
            "/v1/admin/users", json={"name": "lister", "password": USER_PASSWORD, "roles": ["app-rw"]}
        ).raise_for_status()
        admin.post(
            "/v1/admin/users", json={"name": "measurer", "password": USER_PASSWORD, "roles": ["writer"]}
        ).raise_for_status()
        for start in range(0, HIDDEN_KEYS, 1000):
            ops = [{"op": "set", "key": f"zz:{index:06d}", "value": "x"} for index in range(start, start + 1000)]
            admin.post("/v1/txn", json={"ops": ops}).raise_for_status()
        for index in range(100):
            admin.put(f"/v1/kv/bench:{index}", content=b"v" * 100).raise_for_status()
    tokens = []
    for name in ("lister", "measurer"):
        login = httpx.post(f"{node.url}/v1/auth/login", json={"username": name, "password": USER_PASSWORD}, timeout=60)
        login.raise_for_status()
        tokens.append(login.json()["token"])
    return tokens[0], tokens[1]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="kv-flood-") as tmp:
        node = NodeLauncher(Path(tmp) / "node", ADMIN_PASSWORD)
        node.start()
        try:
            flood_token, token = prepare(node)
            assert node.process is not None
            for kind in args.floods:
                worker = None
                if kind != "quiet":
                    command = [sys.executable, "-m", "bench.flood", "--flood", kind, "--port", str(node.port)]
                    command += ["--connections", str(args.connections), "--token", flood_token]
                    worker = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, text=True)
                    assert worker.stdout is not None
                    ready = worker.stdout.readline().strip()
                    if not ready:
                        raise RuntimeError(f"the {kind} flood did not start")
                    print(f"{kind}: flood {ready}", flush=True)
                    time.sleep(args.settle_s)  # let the flood reach its steady state
                try:
                    result = measure(node.url, token, args.requests)
                    result["rss_mib"] = vm_rss_mib(node.process.pid)
                finally:
                    if worker is not None:
                        worker.kill()
                        worker.wait()
                rows.append({"flood": kind, **result})
                print(row_text(rows[-1]), flush=True)
                time.sleep(args.settle_s)  # the node drops what the flood left behind
        finally:
            node.stop()
    return rows


def row_text(row: dict[str, Any]) -> str:
    get, put = row["GET"], row["PUT"]
    return (
        f"| {row['flood']:<12} | {get['p50']:6.2f} | {get['p99']:6.2f} | {get['max']:7.1f} | "
        f"{put['p50']:6.2f} | {put['p99']:6.2f} | {put['max']:7.1f} | {get['errors'] + put['errors']:>6} | "
        f"{row['rss_mib']:7.0f} |"
    )


HEADER = (
    "| flood        | GET p50 | GET p99 | GET max | PUT p50 | PUT p99 | PUT max | errors | node RSS MiB |\n"
    "|--------------|--------:|--------:|--------:|--------:|--------:|--------:|-------:|-------------:|"
)


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    text = (
        f"""# Flood benchmark

`python -m bench.flood --connections {args.connections} --requests {args.requests} --write` ({machine}).

A client on 127.0.0.1 measures {args.requests} sequential GETs, then {args.requests} PUTs (100-byte
values, fsync=always), on one keep-alive connection, in milliseconds, while a separate process
floods the node from 127.0.0.2: `idle` holds {args.connections} connections that send nothing,
`stalled` {args.connections} connections with a writer's PUT headers and no body, each reopened at
once when the node answers it (429 beyond the 64 requests in flight per address, 408 after the
body timeout: a reconnect storm), `stalled-once` the same without reopening, `logins` runs
200 concurrent wrong-password logins for one user, `listings` 4 clients with a grant on app:*
listing prefix=zz over {HIDDEN_KEYS:,} keys they cannot see. The node runs with its default
settings (README, "Connection limits"). `errors` counts the measuring client's 4xx/5xx answers.

{HEADER}
"""
        + "\n".join(row_text(row) for row in rows)
        + "\n"
    )
    RESULTS_PATH.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--settle-s", type=float, default=2.0)
    parser.add_argument("--floods", nargs="+", default=list(FLOODS), choices=FLOODS)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--flood", choices=FLOODS[1:], help=argparse.SUPPRESS)  # the flooding process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_open_files_limit()
    if args.flood:
        asyncio.run(flood(args.flood, args.port, args.connections, args.token))
        return
    rows = run(args)
    print(HEADER)
    for row in rows:
        print(row_text(row))
    if args.write:
        write_results(rows, args)


if __name__ == "__main__":
    main()
