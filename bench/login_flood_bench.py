"""What a flood of bad logins costs everyone else: a legitimate login and another client's GETs.

    python -m bench.login_flood_bench [--attackers 60] [--duration 10]

`--attackers` concurrent clients (a child process) send wrong passwords for made-up user
names, each attempt from a fresh loopback source address (127.1.x.y), so no per-user or
per-address throttle stops them: only the node's bound on password hashing work does.
Meanwhile this process measures, on the quiet node and then under the flood, a GET loop
(one connection, back to back, from 127.0.0.1) and a legitimate admin login every 0.5 s
from 127.0.0.3. The node runs the default argon2 parameters (what production pays).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from kvstore.chaos.launcher import NodeLauncher

from .stats import percentile

PASSWORD = "bench-admin-password"
LEGIT_SOURCE = "127.0.0.3"


async def _attack(url: str, attackers: int, stop_at: float) -> None:
    counter = 0

    async def attacker(index: int) -> None:
        nonlocal counter
        while time.monotonic() < stop_at:
            counter += 1
            source = f"127.1.{counter // 250 % 250 + 1}.{counter % 250 + 1}"
            transport = httpx.AsyncHTTPTransport(local_address=source)
            async with httpx.AsyncClient(transport=transport, timeout=60) as client:
                body = {"username": f"nobody-{index}-{counter}", "password": "wrong-password"}
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(f"{url}/v1/auth/login", json=body)

    await asyncio.gather(*(attacker(i) for i in range(attackers)))


def _flood(url: str, attackers: int, duration_s: float) -> None:
    asyncio.run(_attack(url, attackers, time.monotonic() + duration_s))


def _measure(node: NodeLauncher, token: str, duration_s: float) -> dict[str, float]:
    """GET latencies (ms) from one thread and legitimate login latencies (ms) from another."""
    stop_at = time.monotonic() + duration_s
    gets: list[float] = []
    logins: list[float] = []
    statuses: dict[int, int] = {}

    def get_loop() -> None:
        with httpx.Client(base_url=node.url, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                client.get("/v1/kv/bench:key").raise_for_status()
                gets.append((time.perf_counter() - started) * 1000)

    def login_loop() -> None:
        transport = httpx.HTTPTransport(local_address=LEGIT_SOURCE)
        with httpx.Client(base_url=node.url, transport=transport, timeout=120) as client:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                response = client.post("/v1/auth/login", json={"username": "admin", "password": PASSWORD})
                logins.append((time.perf_counter() - started) * 1000)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                time.sleep(0.5)

    threads = [threading.Thread(target=get_loop), threading.Thread(target=login_loop)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "get_p50_ms": statistics.median(gets),
        "get_p99_ms": percentile(gets, 0.99),
        "get_max_ms": max(gets),
        "login_median_ms": statistics.median(logins),
        "login_max_ms": max(logins),
        "logins": len(logins),
        "logins_ok": statuses.get(200, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attackers", type=int, default=60)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvbench-login-") as folder:
        node = NodeLauncher(Path(folder) / "node", PASSWORD, env={"KVSTORE_FSYNC": "off"})
        try:
            node.start()
            token = node.token()
            httpx.put(f"{node.url}/v1/kv/bench:key", content=b"x" * 100, headers={"authorization": f"Bearer {token}"})
            quiet = _measure(node, token, args.duration)
            flood = multiprocessing.get_context("spawn").Process(
                target=_flood, args=(node.url, args.attackers, args.duration + 2)
            )
            flood.start()
            time.sleep(1)  # let the flood build up
            loaded = _measure(node, token, args.duration)
            flood.join()
        finally:
            node.close()
    print(f"{args.attackers} concurrent bad logins from fresh addresses, {args.duration:g} s, {os.cpu_count()} cores")
    print("| phase | GET p50 ms | GET p99 ms | GET max ms | login median ms | login max ms | logins ok/sent |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in (("quiet", quiet), ("flood", loaded)):
        print(
            f"| {name} | {row['get_p50_ms']:.2f} | {row['get_p99_ms']:.2f} | {row['get_max_ms']:.1f} | "
            f"{row['login_median_ms']:.0f} | {row['login_max_ms']:.0f} | {row['logins_ok']:.0f}/{row['logins']:.0f} |"
        )


if __name__ == "__main__":
    main()
