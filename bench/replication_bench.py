"""Replication benchmark: what replicas cost the primary, how far behind they run, failover and catch-up.

    python -m bench.replication_bench [--duration 10] [--keys 1000000] [--write]

All nodes are local processes on 127.0.0.1 (fsync=always), in one run:
1. Primary PUT throughput (wrk -t1 -c50, 100-byte values) with 0, 1 and 2 asynchronous
   replicas attached, and with 1 synchronous replica (synchronous_commit=remote_apply).
2. Replication lag under that PUT load, sampled every 20 ms from the primary's slots
   (`/v1/status`): p50/p99/max in bytes and in milliseconds.
3. Promotion: SIGKILL the primary, `POST /v1/admin/promote` on the synchronous replica;
   the node's own measure and the time until it has accepted its first write.
4. Catch-up: load KEYS keys, start an empty replica, time its base backup and until its
   digest equals the primary's (keys/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from kvstore.chaos.launcher import NodeLauncher, free_port

from . import wrk
from .loading import load_keys
from .paths import results_file
from .stats import percentile

VALUE = "x" * 100
KEYS_FOR_PUT = 10_000
TXN_OPS = 500
LOAD_CONCURRENCY = 4
ADMIN_PASSWORD = "bench-password"
LAG_SAMPLE_S = 0.02
RESULTS_PATH = results_file("replication")
REPLICATION_ENV = {
    "KVSTORE_REPLICATION_USER": "replicator",
    "KVSTORE_REPLICATION_PASSWORD": "replicator-password",
    "KVSTORE_CLUSTER_KEY": secrets.token_hex(32),  # one for every node of the benchmark's clusters
}


class Cluster:
    """A primary and named replicas in one work directory; every process is killed on exit."""

    def __init__(self, workdir: Path, primary_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.nodes: dict[str, NodeLauncher] = {}
        self.primary = self._node("p", primary_env or {}, [])

    def _node(self, name: str, env: dict[str, str], args: list[str]) -> NodeLauncher:
        node = NodeLauncher(
            self.workdir / name,
            ADMIN_PASSWORD,
            env={**REPLICATION_ENV, **env},
            args=["--name", name, *args],
            port=free_port(),
        )
        self.nodes[name] = node
        return node

    def start_primary(self) -> NodeLauncher:
        return self.primary.start()

    def add_replica(self, name: str, timeout_s: float = 600.0) -> NodeLauncher:
        node = self._node(name, {}, ["--replica-of", self.primary.url])
        node.spawn()
        node.wait_ready(timeout_s)
        return node

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


def _headers(node: NodeLauncher) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token()}"}


def _get(node: NodeLauncher, path: str) -> Any:
    response = httpx.get(f"{node.url}{path}", headers=_headers(node), timeout=60)
    response.raise_for_status()
    return response.json()


def _wait_converged(primary: NodeLauncher, replicas: list[NodeLauncher], timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        want = _get(primary, "/v1/admin/digest")
        if all(_get(r, "/v1/admin/digest")["digest"] == want["digest"] for r in replicas):
            return
        time.sleep(0.2)
    raise TimeoutError("replicas did not converge")


def _put_load(node: NodeLauncher, args: argparse.Namespace) -> wrk.WrkResult:
    script = wrk.lua_requests("PUT", "/v1/kv/bench:", KEYS_FOR_PUT, VALUE, _headers(node))
    return wrk.run(node.url, args.duration, args.connections, script)


def _sample_lag(node: NodeLauncher, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    with httpx.Client(base_url=node.url, headers=_headers(node), timeout=10) as client:
        while not stop.is_set():
            for replica in client.get("/v1/status").json()["replicas"]:
                if replica["lag_bytes"] is not None:
                    samples.append((float(replica["lag_bytes"]), float(replica["lag_s"]) * 1000))
            time.sleep(LAG_SAMPLE_S)


def bench_throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, replicas, env in (
        ("0 replicas", 0, {}),
        ("1 replica", 1, {}),
        ("2 replicas", 2, {}),
        (
            "1 replica, remote_apply",
            1,
            {"KVSTORE_SYNCHRONOUS_COMMIT": "remote_apply", "KVSTORE_SYNCHRONOUS_REPLICAS": "ANY 1 (r1)"},
        ),
    ):
        cluster = Cluster(workdir / label.replace(" ", "_").replace(",", ""), env)
        try:
            primary = cluster.start_primary()
            attached = [cluster.add_replica(f"r{i + 1}") for i in range(replicas)]
            if attached:  # lag under load, not the catch-up of a replica that just started
                _wait_converged(primary, attached)
                time.sleep(1.5)  # a feedback round after catching up
            samples: list[tuple[float, float]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=_sample_lag, args=(primary, stop, samples), daemon=True)
            if attached:
                sampler.start()
            result = _put_load(primary, args)
            stop.set()
            if attached:
                sampler.join()
                _wait_converged(primary, attached)
            entry: dict[str, Any] = {"put": result.as_dict()}
            if samples:
                lag_bytes, lag_ms = [s[0] for s in samples], [s[1] for s in samples]
                entry["lag"] = {
                    "samples": len(samples),
                    "bytes_p50": percentile(lag_bytes, 0.5),
                    "bytes_p99": percentile(lag_bytes, 0.99),
                    "bytes_max": max(lag_bytes),
                    "ms_p50": percentile(lag_ms, 0.5),
                    "ms_p99": percentile(lag_ms, 0.99),
                    "ms_max": max(lag_ms),
                }
            results[label] = entry
        finally:
            cluster.close()
    return results


def bench_promotion(workdir: Path) -> dict[str, Any]:
    env = {"KVSTORE_SYNCHRONOUS_COMMIT": "remote_apply", "KVSTORE_SYNCHRONOUS_REPLICAS": "ANY 1 (r1)"}
    cluster = Cluster(workdir / "promotion", env)
    try:
        primary = cluster.start_primary()
        replica = cluster.add_replica("r1")
        with httpx.Client(base_url=primary.url, headers=_headers(primary), timeout=10) as client:
            for n in range(2000):
                client.put(f"/v1/kv/before:{n}", content=VALUE).raise_for_status()
        token = replica.token()
        primary.kill()
        started = time.perf_counter()
        promoted = httpx.post(
            f"{replica.url}/v1/admin/promote", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        promoted.raise_for_status()
        written = httpx.put(
            f"{replica.url}/v1/kv/after", content=VALUE, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        written.raise_for_status()
        until_first_write_s = time.perf_counter() - started
        return {**promoted.json(), "until_first_write_ms": round(until_first_write_s * 1000, 1)}
    finally:
        cluster.close()


def bench_catch_up(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = Cluster(workdir / "catch-up")
    try:
        primary = cluster.start_primary()
        load = load_keys(
            primary.url,
            _headers(primary),
            args.keys,
            VALUE,
            txn_ops=TXN_OPS,
            concurrency=LOAD_CONCURRENCY,
            timeout_s=120,
        )
        asyncio.run(load)
        started = time.perf_counter()
        replica = cluster.add_replica("r1", timeout_s=1800)
        ready_s = time.perf_counter() - started
        _wait_converged(primary, [replica], timeout_s=1800)
        converged_s = time.perf_counter() - started
        backup = next(json.loads(line) for line in replica.log().splitlines() if '"msg":"base backup taken"' in line)
        return {
            "keys": args.keys,
            "snapshot_bytes": backup["bytes"],
            "base_backup_s": backup["seconds"],
            "ready_s": round(ready_s, 2),
            "converged_s": round(converged_s, 2),
            "keys_per_s": round(args.keys / converged_s),
            "mb_per_s": round(backup["bytes"] / converged_s / 1e6, 1),
        }
    finally:
        cluster.close()


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    throughput = results["throughput"]
    base = throughput["0 replicas"]["put"]["requests_per_s"]
    lines = [
        "| primary PUT, fsync=always | req/s | vs 0 replicas | p99 ms | lag p50 / p99 / max bytes | lag p50 / p99 / max ms |",
        "|---|---:|---:|---:|---|---|",
    ]
    for label, entry in throughput.items():
        put, lag = entry["put"], entry.get("lag")
        lag_bytes = f"{lag['bytes_p50']:,.0f} / {lag['bytes_p99']:,.0f} / {lag['bytes_max']:,.0f}" if lag else "-"
        lag_ms = f"{lag['ms_p50']:.0f} / {lag['ms_p99']:.0f} / {lag['ms_max']:.0f}" if lag else "-"
        lines.append(
            f"| {label} | {put['requests_per_s']:,.0f} | {put['requests_per_s'] / base:.2f} | {put['p99_ms']:.1f} "
            f"| {lag_bytes} | {lag_ms} |"
        )
    promotion, catch_up = results["promotion"], results["catch_up"]
    lines += [
        "",
        f"- promotion (SIGKILL the primary, promote the remote_apply replica): {promotion['seconds'] * 1000:.0f} ms "
        f"in the node, {promotion['until_first_write_ms']:.0f} ms until its first write was acknowledged; "
        f"{promotion['unreceived_bytes']} bytes the old primary had that it never received",
        f"- catch-up of an empty replica from {catch_up['keys']:,} keys: base backup of "
        f"{catch_up['snapshot_bytes'] / 1e6:.0f} MB in {catch_up['base_backup_s']:.1f} s, ready after "
        f"{catch_up['ready_s']:.1f} s, digest equal after {catch_up['converged_s']:.1f} s "
        f"({catch_up['keys_per_s']:,} keys/s, {catch_up['mb_per_s']} MB/s)",
    ]
    header = (
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s, 100-byte values, {KEYS_FOR_PUT} keys; lag sampled every "
        f"{LAG_SAMPLE_S * 1000:.0f} ms from the primary's slots; all nodes on one machine: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    return "\n".join([header, "", *lines]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys for the catch-up measurement")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS_PATH.name}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvbench-repl-") as folder:
        workdir = Path(folder)
        results = {
            "throughput": bench_throughput(args, workdir),
            "promotion": bench_promotion(workdir),
            "catch_up": bench_catch_up(args, workdir),
        }
    text = report(results, args)
    print(text)
    print(json.dumps(results, indent=2))
    if args.write:
        RESULTS_PATH.write_text("# Replication benchmark\n\n`python -m bench.replication_bench --write`\n\n" + text)


if __name__ == "__main__":
    main()
