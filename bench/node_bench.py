"""Data-path benchmark: kvstored GET/PUT/TXN beside the bare server, Redis and etcd, in one run.

    python -m bench.node_bench [--duration 10] [--connections 50] [--skip-etcd]

Everything is measured with wrk (1 thread, 50 keep-alive connections, 100-byte
values, 10,000 keys) on 127.0.0.1:
- bare: the same tiny in-memory app on the same server stack (granian embedded RSGI)
  with no storage engine: the ceiling our node can approach;
- kvstored with fsync=always and fsync=off;
- Redis (Debian's redis-server, appendfsync always) with redis-benchmark, as the issue asks;
- etcd (Debian's etcd-server 3.4) through its HTTP JSON gateway.
Prints a table and writes JSON and markdown (bench/results/RESULTS-node.md with --write).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from kvstore.chaos.launcher import NodeLauncher, free_port

from . import wrk
from .paths import REPOSITORY, results_file

KEYS = 10_000
VALUE = "x" * 100
TXN_OPS = 100
ADMIN_PASSWORD = "bench-password"
RESULTS_PATH = results_file("node")


def _wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answers at {url}")


@contextmanager
def _process(command: list[str], log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench_bare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", "bench.bakeoff.apps", "granian-embed", "--port", str(port)]
    with _process(command, workdir / "bare.log", cwd=REPOSITORY):
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/kv/k1")
        for i in range(10):
            httpx.put(f"{base}/kv/k{i}", content=VALUE)
        put = wrk.run(base, args.duration, args.connections, wrk.lua_requests("PUT", "/kv/k", KEYS, VALUE))
        get = wrk.run(base, args.duration, args.connections, wrk.lua_requests("GET", "/kv/k", 10))
    return {"GET": get.as_dict(), "PUT": put.as_dict()}


def _load_keys(node: NodeLauncher, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=node.url, headers=headers, timeout=30) as client:
        for start in range(0, KEYS, TXN_OPS):
            ops = [{"op": "set", "key": f"k{i}", "value": VALUE} for i in range(start, start + TXN_OPS)]
            client.post("/v1/txn", json={"ops": ops}).raise_for_status()


def bench_kvstored(args: argparse.Namespace, workdir: Path, fsync: str) -> dict[str, Any]:
    node = NodeLauncher(workdir / f"kvstored-{fsync}", ADMIN_PASSWORD, env={"KVSTORE_FSYNC": fsync})
    try:
        node.start()
        headers = {"Authorization": f"Bearer {node.token()}"}
        _load_keys(node, headers)
        get = wrk.run(
            node.url, args.duration, args.connections, wrk.lua_requests("GET", "/v1/kv/k", KEYS, headers=headers)
        )
        put = wrk.run(
            node.url, args.duration, args.connections, wrk.lua_requests("PUT", "/v1/kv/k", KEYS, VALUE, headers)
        )
        ops = [{"op": "set", "key": f"t{i}", "value": VALUE} for i in range(TXN_OPS)]
        txn_headers = {**headers, "Content-Type": "application/json"}
        txn = wrk.run(
            node.url,
            args.duration,
            args.connections,
            wrk.lua_requests("POST", "/v1/txn?n=", KEYS, json.dumps({"ops": ops}), txn_headers),
        )
        result = {"GET": get.as_dict(), "PUT": put.as_dict(), "TXN": txn.as_dict()}
        result["TXN"]["ops_per_s"] = txn.requests_per_s * TXN_OPS
        return result
    finally:
        node.close()


def bench_redis(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = shutil.which("redis-server")
    client = shutil.which("redis-benchmark")
    if server is None or client is None:
        raise RuntimeError("redis-server/redis-benchmark not installed (Debian package 'redis-server')")
    port = free_port()
    command = [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(workdir),
    ]
    with _process(command, workdir / "redis.log"):
        time.sleep(0.5)
        requests = max(50_000, int(args.duration * 40_000))
        completed = subprocess.run(
            [
                client,
                "-p",
                str(port),
                "-t",
                "set",
                "-c",
                str(args.connections),
                "-d",
                "100",
                "-r",
                str(KEYS),
                "-n",
                str(requests),
                "--precision",
                "3",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    text = completed.stdout
    rate = re.search(r"([\d.]+) requests per second", text)
    summary = re.search(
        r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)",
        text,
    )
    if rate is None:
        raise RuntimeError(f"unexpected redis-benchmark output:\n{text}")
    result: dict[str, Any] = {"requests_per_s": float(rate.group(1))}
    if summary is not None:
        result.update(p50_ms=float(summary.group(3)), p99_ms=float(summary.group(5)), max_ms=float(summary.group(6)))
    return {"SET appendfsync=always": result}


def bench_etcd(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise RuntimeError("etcd is not installed (Debian package 'etcd-server')")
    port, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        etcd,
        "--data-dir",
        str(workdir / "etcd"),
        "--listen-client-urls",
        url,
        "--advertise-client-urls",
        url,
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-cluster",
        f"default=http://127.0.0.1:{peer}",
    ]
    with _process(command, workdir / "etcd.log"):
        _wait_http(url + "/health")
        b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
        for i in range(10):
            httpx.post(url + "/v3/kv/put", json={"key": b64(f"k{i}"), "value": b64(VALUE)}).raise_for_status()
        put_body = json.dumps({"key": b64("k1"), "value": b64(VALUE)})
        get_body = json.dumps({"key": b64("k1")})
        put = wrk.run(url, args.duration, args.connections, wrk.lua_requests("POST", "/v3/kv/put?n=", KEYS, put_body))
        get = wrk.run(url, args.duration, args.connections, wrk.lua_requests("POST", "/v3/kv/range?n=", KEYS, get_body))
    return {"GET (range)": get.as_dict(), "PUT": put.as_dict()}


def _row(name: str, op: str, result: dict[str, Any]) -> str:
    return (
        f"| {name} | {op} | {result['requests_per_s']:,.0f} | {result.get('p50_ms', float('nan')):.2f} | "
        f"{result.get('p99_ms', float('nan')):.2f} | {result.get('max_ms', float('nan')):.1f} |"
    )


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| system | op | req/s | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, ops in results.items():
        for op, result in ops.items():
            if isinstance(result, dict) and "requests_per_s" in result:
                lines.append(_row(name, op, result))
    bare, always = results.get("bare"), results.get("kvstored fsync=always")
    ratios = []
    if bare and always:
        ratios.append(f"- GET / bare GET: {always['GET']['requests_per_s'] / bare['GET']['requests_per_s']:.2f}x")
        ratios.append(f"- TXN ({TXN_OPS} ops/request, fsync=always): {always['TXN']['ops_per_s']:,.0f} ops/s")
    redis = results.get("redis")
    if always and redis:
        redis_set = redis["SET appendfsync=always"]["requests_per_s"]
        ratios.append(
            f"- PUT fsync=always / Redis SET appendfsync=always: {always['PUT']['requests_per_s'] / redis_set:.2f}x"
        )
    etcd = results.get("etcd")
    if always and etcd:
        ratios.append(
            f"- PUT fsync=always / etcd PUT: {always['PUT']['requests_per_s'] / etcd['PUT']['requests_per_s']:.2f}x"
        )
    header = (
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s, 100-byte values, {KEYS} keys; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    return "\n".join([header, "", *lines, "", *ratios]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--skip-etcd", action="store_true")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS_PATH.name}")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kvbench-") as folder:
        workdir = Path(folder)
        results["bare"] = bench_bare(args, workdir)
        results["kvstored fsync=always"] = bench_kvstored(args, workdir, "always")
        results["kvstored fsync=off"] = bench_kvstored(args, workdir, "off")
        if not args.skip_redis:
            results["redis"] = bench_redis(args, workdir)
        if not args.skip_etcd:
            results["etcd"] = bench_etcd(args, workdir)
    text = report(results, args)
    print(text)
    print(json.dumps(results, indent=2))
    if args.write:
        RESULTS_PATH.write_text("# Data-path benchmark\n\n`python -m bench.node_bench --write`\n\n" + text)


if __name__ == "__main__":
    main()
