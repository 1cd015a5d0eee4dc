"""Large-state benchmark: memory per key, request latency during a checkpoint, recovery time.

    python -m bench.recovery_bench [--keys 1000000] [--wal-records 100000] [--write]

1. Loads KEYS keys (100-byte values) through /v1/txn and reports resident memory per key.
2. Runs a GET load with wrk (50 connections) twice: once quietly, once while a
   checkpoint of the whole store runs; reports p99 and max latency of both.
3. Appends WAL_RECORDS more single-key PUTs after that checkpoint, kills the node with
   SIGKILL, restarts it and reports the recovery time (snapshot load + WAL replay, from
   the node's own log) and the time until /ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from kvstore.chaos.launcher import NodeLauncher

from . import wrk
from .loading import load_keys
from .paths import results_file

VALUE = "x" * 100
TXN_OPS = 100
LOAD_CONCURRENCY = 8
ADMIN_PASSWORD = "bench-password"
RESULTS_PATH = results_file("recovery")


def _lag_buckets(url: str) -> dict[str, float]:
    """Cumulative counts of kvstore_event_loop_lag_seconds by bucket bound, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(r'^kvstore_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.MULTILINE)
    return {bound: float(count) for bound, count in found}


def _worst_lag_s(before: dict[str, float], after: dict[str, float]) -> str:
    """Upper bound of the highest bucket that gained samples between two scrapes."""
    worst, grown_below = "0", 0.0
    for bound in sorted(after, key=lambda b: math.inf if b == "+Inf" else float(b)):
        grown = after[bound] - before.get(bound, 0.0)  # cumulative: samples <= bound
        if grown > grown_below:
            worst = bound
        grown_below = grown
    return worst


def _recovery_line(log: str) -> dict[str, Any]:
    for line in reversed(log.splitlines()):
        if '"recovery complete"' in line:
            return dict(json.loads(line))
    raise RuntimeError("no 'recovery complete' line in the node log")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = {
        "KVSTORE_FSYNC": "off",
        "KVSTORE_CHECKPOINT_INTERVAL_S": "86400",
        "KVSTORE_CHECKPOINT_WAL_BYTES": str(64 * 1024**3),
    }
    node = NodeLauncher(workdir / "node", ADMIN_PASSWORD, env=env)
    results: dict[str, Any] = {"keys": args.keys, "wal_records": args.wal_records}
    try:
        node.start()
        headers = {"Authorization": f"Bearer {node.token()}"}
        rss_empty = node.rss_bytes()
        started = time.perf_counter()
        load = load_keys(
            node.url, headers, args.keys, VALUE, txn_ops=TXN_OPS, concurrency=LOAD_CONCURRENCY, timeout_s=60
        )
        asyncio.run(load)
        results["load_seconds"] = round(time.perf_counter() - started, 1)
        results["rss_empty_bytes"] = rss_empty
        results["rss_loaded_bytes"] = node.rss_bytes()
        results["memory_per_key_bytes"] = round((results["rss_loaded_bytes"] - rss_empty) / args.keys)

        get_script = wrk.lua_requests("GET", "/v1/kv/key:00", 100_000, headers=headers)
        lag_start = _lag_buckets(node.url)
        quiet = wrk.run(node.url, args.window, 50, get_script)
        lag_quiet = _lag_buckets(node.url)
        checkpoint: dict[str, Any] = {}

        def take_checkpoint() -> None:
            time.sleep(args.window / 4)
            with httpx.Client(base_url=node.url, headers=headers, timeout=600) as client:
                began = time.perf_counter()
                checkpoint.update(client.post("/v1/admin/checkpoint").raise_for_status().json())
                checkpoint["wall_seconds"] = round(time.perf_counter() - began, 3)

        trigger = threading.Thread(target=take_checkpoint)
        trigger.start()
        during = wrk.run(node.url, args.window, 50, get_script)
        trigger.join()
        lag_during = _lag_buckets(node.url)
        results["loop_lag_worst_s"] = {
            "without_checkpoint": _worst_lag_s(lag_start, lag_quiet),
            "during_checkpoint": _worst_lag_s(lag_quiet, lag_during),
        }
        results["get_without_checkpoint"] = quiet.as_dict()
        results["get_during_checkpoint"] = during.as_dict()
        results["checkpoint"] = checkpoint

        put_script = wrk.lua_requests("PUT", "/v1/kv/key:", args.keys, VALUE, headers)
        # wrk runs for a duration, not a count: size the windows by the rate of a first short one.
        first = wrk.run(node.url, 1, 50, put_script)
        written = first.requests
        while written < args.wal_records:
            window_s = max(1.0, (args.wal_records - written) / first.requests_per_s)
            written += wrk.run(node.url, window_s, 50, put_script).requests
        node.kill()
        began = time.perf_counter()
        node.restart()
        results["restart_to_ready_seconds"] = round(time.perf_counter() - began, 2)
        line = _recovery_line(node.log())
        results["recovery"] = {k: line[k] for k in ("seconds", "records_replayed", "keys", "redo_lsn", "end_lsn")}
        return results
    finally:
        node.close()


def report(results: dict[str, Any]) -> str:
    quiet, during, rec = results["get_without_checkpoint"], results["get_during_checkpoint"], results["recovery"]
    return (
        "\n".join(
            [
                f"{os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}",
                "",
                f"- keys loaded: {results['keys']:,} (100-byte values) in {results['load_seconds']} s",
                f"- memory per key: {results['memory_per_key_bytes']} bytes "
                f"(RSS {results['rss_empty_bytes'] / 2**20:.0f} MiB empty -> {results['rss_loaded_bytes'] / 2**20:.0f} MiB)",
                f"- checkpoint of {results['checkpoint'].get('entries', 0):,} keys: "
                f"{results['checkpoint'].get('seconds')} s, snapshot {results['checkpoint'].get('snapshot_bytes', 0) / 2**20:.0f} MiB",
                f"- GET under load without checkpoint: {quiet['requests_per_s']:,.0f} req/s, p99 {quiet['p99_ms']:.2f} ms, "
                f"max {quiet['max_ms']:.1f} ms",
                f"- GET under load during checkpoint:  {during['requests_per_s']:,.0f} req/s, p99 {during['p99_ms']:.2f} ms, "
                f"max {during['max_ms']:.1f} ms",
                f"- worst event-loop lag (node's own kvstore_event_loop_lag_seconds, bucket bound): "
                f"{results['loop_lag_worst_s']['without_checkpoint']} s without checkpoint, "
                f"{results['loop_lag_worst_s']['during_checkpoint']} s during it",
                f"- recovery after SIGKILL: {rec['seconds']} s for {rec['keys']:,} keys "
                f"(snapshot + {rec['records_replayed']:,} WAL records); restart to /ready {results['restart_to_ready_seconds']} s",
            ]
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--wal-records", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=12.0, help="seconds of each GET load window")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS_PATH.name}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvrecovery-") as folder:
        results = run(args, Path(folder))
    text = report(results)
    print(text)
    print(json.dumps(results, indent=2))
    if args.write:
        RESULTS_PATH.write_text("# Large-state benchmark\n\n`python -m bench.recovery_bench --write`\n\n" + text)


if __name__ == "__main__":
    main()
