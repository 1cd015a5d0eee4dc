"""Continuous archiving: what it costs a write, how fast it ships WAL, how long a restore takes.

    python -m bench.archive_bench [--duration 8] [--rounds 2] [--wal-mib 256] [--restore] [--write]

Archives go to file:// (a folder on the same disk) and to S3: SeaweedFS (`weed mini`,
bench/seaweedfs.py) on loopback, so S3 here is the node's client and SeaweedFS's own work on
the same 2 cores, not a network.

1. latency: wrk PUTs (1 thread, --connections, 100-byte values over 10,000 keys) against one
   node per (archive off | file | s3) x (fsync always | off), all started first and run
   alternately for --rounds rounds (the machine is shared: the spread between rounds says how
   far to trust a difference). archive_timeout_s is --archive-timeout (1 s: a segment is closed
   and uploaded every second of the window, the archiver's worst case). After each window the
   bench waits until the archive holds the window's last commit, so no upload spills into the
   next one, and reports that wait.
2. throughput: per store (file, s3) x (plain, AES-256-GCM encrypted), a fresh node (fsync off)
   takes --wal-mib MiB of WAL as /v1/txn batches of 100 sets of 1 KiB values from 4 connections;
   reports the WAL write rate, the archive rate during the writes
   (kvstore_archive_bytes_total{kind="wal"} over the write window), the backlog when the writes
   stop, and the time and rate at which it drains until archived_lsn reaches the last commit.
3. restore (--restore): loads --keys keys (100-byte values) into a node archiving to file://,
   waits for an archived snapshot taken after the load, writes --wal-records single-key PUTs
   with wrk, waits until they are archived, then times `kvctl restore URL --data-dir NEW` and
   `kvstored --data-dir NEW` until /ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from kvstore.chaos.launcher import NodeLauncher
from kvstore.node.wal.format import parse_lsn
from kvstore.node.wal.segments import list_segments

from . import wrk
from .loading import load_keys
from .paths import results_file
from .seaweedfs import S3Server, seaweedfs

ADMIN_PASSWORD = "bench-password"
RESULTS_PATH = results_file("archive")
PUT_KEYS = 10_000
PUT_VALUE = "x" * 100
TXN_OPS = 100
TXN_VALUE = "v" * 1024
TXN_KEYS = 10_000  # the WAL grows with every write; the store stays small
TXN_CONNECTIONS = 4
ARCHIVED_TIMEOUT_S = 600.0
MB = 1_000_000


class Node:
    """A kvstored child with its token, status and archive counters."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.launcher = NodeLauncher(directory, ADMIN_PASSWORD, env=env)
        self.archiving = "KVSTORE_ARCHIVE_URL" in env

    def start(self) -> Node:
        self.launcher.start()
        return self

    @property
    def url(self) -> str:
        return self.launcher.url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.launcher.token()}"}

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/v1/status", headers=self.headers, timeout=30)
        return dict(response.raise_for_status().json())

    def commit_lsn(self) -> int:
        return parse_lsn(self.status()["lsn"]["commit_lsn"])

    def archived_wal_bytes(self) -> int:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        found = re.search(r'^kvstore_archive_bytes_total\{kind="wal"\} (\S+)$', text, re.MULTILINE)
        if found is None:
            raise RuntimeError(f'{self.url}/metrics has no kvstore_archive_bytes_total{{kind="wal"}}')
        return int(float(found.group(1)))

    def wait_archived(self, lsn: int) -> float:
        """Seconds until the archive holds everything up to `lsn`."""
        began = time.perf_counter()
        while True:
            archive = self.status()["archive"]
            if archive["archived_lsn"] is not None and parse_lsn(archive["archived_lsn"]) >= lsn:
                return time.perf_counter() - began
            if time.perf_counter() - began > ARCHIVED_TIMEOUT_S:
                raise TimeoutError(
                    f"{self.url}: the archive did not reach {lsn} in {ARCHIVED_TIMEOUT_S:.0f} s: {archive}"
                )
            time.sleep(0.1)

    def wait_snapshot(self, newer_than: int = -1) -> str:
        """The archive's newest snapshot once its redo LSN is past `newer_than` (-1: any)."""
        deadline = time.monotonic() + ARCHIVED_TIMEOUT_S
        while time.monotonic() < deadline:
            name = self.status()["archive"]["last_snapshot"]
            if name is not None and _snapshot_redo_lsn(name) > newer_than:
                return str(name)
            time.sleep(0.2)
        raise TimeoutError(f"{self.url}: no archived snapshot past LSN {newer_than} in {ARCHIVED_TIMEOUT_S:.0f} s")

    def close(self) -> None:
        self.launcher.close()


def _snapshot_redo_lsn(name: str) -> int:
    """The redo LSN in an archived snapshot's name: snapshots/<timeline>-<redo LSN>/snapshot.chk."""
    found = re.fullmatch(r"snapshots/[0-9A-F]{8}-([0-9A-F]{16})/snapshot\.chk", name)
    if found is None:
        raise RuntimeError(f"unexpected archived snapshot name {name!r}")
    return int(found.group(1), 16)


def _archive_env(store: str, folder: Path, s3: S3Server | None, name: str, encrypted: bool = False) -> dict[str, str]:
    """The node settings that archive to `store` ('file' or 's3') under a location of its own."""
    if store == "file":
        env = {"KVSTORE_ARCHIVE_URL": (folder / "archives" / name).as_uri()}
    else:
        assert s3 is not None
        env = {"KVSTORE_ARCHIVE_URL": s3.url(name), **s3.env}
    if encrypted:
        env["KVSTORE_ARCHIVE_KEY"] = os.urandom(32).hex()
    return env


@contextmanager
def _nodes() -> Iterator[Callable[[Path, dict[str, str]], Node]]:
    """`start(directory, env)`: a node started, and stopped when the block ends."""
    started: list[Node] = []

    def start(directory: Path, env: dict[str, str]) -> Node:
        node = Node(directory, env)
        started.append(node)  # before it is ready: one whose start times out is stopped too
        return node.start()

    try:
        yield start
    finally:
        for node in started:
            node.close()


# -- 1. write latency with archiving off and on ----------------------------------------------


def latency(args: argparse.Namespace, folder: Path, s3: S3Server | None) -> list[dict[str, Any]]:
    stores = ["off", "file"] + (["s3"] if s3 is not None else [])
    rows: list[dict[str, Any]] = []
    with _nodes() as start:
        nodes: dict[tuple[str, str], Node] = {}
        for fsync in args.fsync:
            for store in stores:
                env = {"KVSTORE_FSYNC": fsync, "KVSTORE_ARCHIVE_TIMEOUT_S": str(args.archive_timeout)}
                if store != "off":
                    env.update(_archive_env(store, folder, s3, f"latency-{store}-{fsync}"))
                nodes[store, fsync] = start(folder / f"latency-{store}-{fsync}", env)
        for node in nodes.values():
            if node.archiving:
                node.wait_snapshot()  # the first one, taken at start, is not part of the windows
        print(f"PUT, wrk -t1 -c{args.connections} -d{args.duration:g}s, archive_timeout_s={args.archive_timeout:g}")
        print(
            f"{'fsync':<7} {'archive':<7} {'round':>5} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'archived after s':>16}"
        )
        for round_number in range(1, args.rounds + 1):
            order = stores if round_number % 2 else stores[::-1]
            for fsync in args.fsync:
                for store in order:
                    node = nodes[store, fsync]
                    script = wrk.lua_requests("PUT", "/v1/kv/key:", PUT_KEYS, PUT_VALUE, node.headers)
                    result = wrk.run(node.url, args.duration, args.connections, script)
                    catch_up = node.wait_archived(node.commit_lsn()) if node.archiving else None
                    rows.append(
                        {
                            "fsync": fsync,
                            "archive": store,
                            "round": round_number,
                            **result.as_dict(),
                            "catch_up_s": catch_up,
                        }
                    )
                    shown = "-" if catch_up is None else f"{catch_up:.2f}"
                    print(
                        f"{fsync:<7} {store:<7} {round_number:>5} {result.requests_per_s:>9,.0f} "
                        f"{result.p50_ms:>7.2f} {result.p99_ms:>7.2f} {shown:>16}"
                    )
                    if result.non_2xx or result.socket_errors:
                        raise RuntimeError(
                            f"{store}/{fsync}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors"
                        )
    return rows


# -- 2. archive throughput ---------------------------------------------------------------------


async def _write_wal(node: Node, total_bytes: int) -> None:
    batches = iter(range(math.ceil(total_bytes / (TXN_OPS * len(TXN_VALUE)))))
    async with httpx.AsyncClient(base_url=node.url, headers=node.headers, timeout=60) as client:

        async def worker() -> None:
            for batch in batches:
                first = batch * TXN_OPS
                ops = [
                    {"op": "set", "key": f"wal:{(first + i) % TXN_KEYS}", "value": TXN_VALUE} for i in range(TXN_OPS)
                ]
                (await client.post("/v1/txn", json={"ops": ops})).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(TXN_CONNECTIONS)))


def _keep_up(args: argparse.Namespace, folder: Path, env: dict[str, str], name: str) -> dict[str, float]:
    """Writes with the archiver on: how much it archives meanwhile, and how long it takes after."""
    with _nodes() as start:
        node = start(folder / f"keep-up-{name}", {"KVSTORE_FSYNC": "off", **env})
        node.wait_snapshot()
        lsn_start, archived_start = node.commit_lsn(), node.archived_wal_bytes()
        began = time.perf_counter()
        asyncio.run(_write_wal(node, args.wal_mib * 2**20))
        write_s = time.perf_counter() - began
        lsn_end, archived_at_end = node.commit_lsn(), node.archived_wal_bytes()
        backlog = node.status()["archive"]["lag_bytes"]
        drain_s = node.wait_archived(lsn_end)
        drained = node.archived_wal_bytes() - archived_at_end
    return {
        "wal_mb": (lsn_end - lsn_start) / MB,
        "write_mb_s": (lsn_end - lsn_start) / MB / write_s,
        "archived_during_writes_mb_s": (archived_at_end - archived_start) / MB / write_s,
        "backlog_mb": backlog / MB,
        "drain_s": drain_s,
        "drain_mb_s": drained / MB / drain_s,
    }


def _backlog_rate(args: argparse.Namespace, folder: Path, env: dict[str, str], name: str) -> float:
    """The archiver's own MB/s, not bounded by the writers: WAL written with archiving off (and no
    checkpoint to recycle it), the node killed and restarted with it on, which then archives every
    completed segment at once. Timed from its first segment archived to its last (the open one
    waits for archive_timeout_s, so it is left out)."""
    quiet = {"KVSTORE_FSYNC": "off", "KVSTORE_CHECKPOINT_INTERVAL_S": "86400"}
    quiet["KVSTORE_CHECKPOINT_WAL_BYTES"] = str(64 * 1024**3)
    with _nodes() as start:
        node = start(folder / f"backlog-{name}", quiet)
        asyncio.run(_write_wal(node, args.wal_mib * 2**20))
        node.launcher.kill()
        completed = list_segments(node.launcher.data_dir / "WAL")[:-1]
        backlog = sum(segment.size_bytes for segment in completed)
        node.launcher.extra_env.update(env)
        node.launcher.restart()
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + ARCHIVED_TIMEOUT_S
        while not samples or samples[-1][1] < backlog:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.url}: {backlog} bytes of WAL not archived in {ARCHIVED_TIMEOUT_S:.0f} s")
            samples.append((time.perf_counter(), node.archived_wal_bytes()))
            time.sleep(0.05)
    first = next(sample for sample in samples if sample[1] > 0)
    last = samples[-1]
    if last[1] <= first[1]:
        raise RuntimeError(f"{len(completed)} segments were archived between two polls: raise --wal-mib")
    return (last[1] - first[1]) / MB / (last[0] - first[0])


def throughput(args: argparse.Namespace, folder: Path, s3: S3Server | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    print(f"\n{args.wal_mib} MiB of WAL as /v1/txn of {TXN_OPS} x 1 KiB, archive_timeout_s={args.archive_timeout:g}")
    print(
        f"{'archive':<15} {'WAL MB':>7} {'write MB/s':>10} {'archived MB/s':>13} {'backlog MB':>10} "
        f"{'drain s':>7} {'drain MB/s':>10} {'backlog MB/s':>12}"
    )
    for store in ["file"] + (["s3"] if s3 is not None else []):
        for encrypted in (False, True):
            label = f"{store} {'encrypted' if encrypted else 'plain'}"
            name = f"{store}-{'encrypted' if encrypted else 'plain'}"
            env = {"KVSTORE_ARCHIVE_TIMEOUT_S": str(args.archive_timeout)}
            row: dict[str, Any] = {"archive": label}
            row.update(_keep_up(args, folder, {**env, **_archive_env(store, folder, s3, name, encrypted)}, name))
            backlog_env = {**env, **_archive_env(store, folder, s3, f"backlog-{name}", encrypted)}
            row["backlog_rate_mb_s"] = _backlog_rate(args, folder, backlog_env, name)
            rows.append(row)
            print(
                f"{label:<15} {row['wal_mb']:>7.0f} {row['write_mb_s']:>10.1f} "
                f"{row['archived_during_writes_mb_s']:>13.1f} {row['backlog_mb']:>10.1f} {row['drain_s']:>7.2f} "
                f"{row['drain_mb_s']:>10.1f} {row['backlog_rate_mb_s']:>12.1f}"
            )
    return rows


# -- 3. restore time ---------------------------------------------------------------------------


def _put_records(node: Node, keys: int, records: int) -> int:
    """At least `records` single-key PUTs with wrk (it runs for a time, not a count: the windows
    are sized by the rate of a first short one); returns how many were written."""
    script = wrk.lua_requests("PUT", "/v1/kv/key:", keys, PUT_VALUE, node.headers)
    first = wrk.run(node.url, 1, 50, script)
    written = first.requests
    while written < records:
        written += wrk.run(node.url, max(1.0, (records - written) / first.requests_per_s), 50, script).requests
    return written


def restore(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    url = (folder / "archives" / "restore").as_uri()
    env = {
        "KVSTORE_FSYNC": "off",
        "KVSTORE_CHECKPOINT_INTERVAL_S": "86400",
        "KVSTORE_CHECKPOINT_WAL_BYTES": str(64 * 1024**3),
        "KVSTORE_ARCHIVE_URL": url,
        "KVSTORE_ARCHIVE_TIMEOUT_S": str(args.archive_timeout),
        "KVSTORE_ARCHIVE_SNAPSHOT_INTERVAL_S": str(args.snapshot_interval),
    }
    results: dict[str, Any] = {"keys": args.keys}
    with _nodes() as start:
        source = start(folder / "restore-source", env)
        began = time.perf_counter()
        asyncio.run(
            load_keys(source.url, source.headers, args.keys, PUT_VALUE, txn_ops=TXN_OPS, concurrency=8, timeout_s=60)
        )
        results["load_s"] = time.perf_counter() - began
        loaded_lsn = source.commit_lsn()
        began = time.perf_counter()
        snapshot = source.wait_snapshot(newer_than=loaded_lsn - 1)
        results["snapshot_wait_s"] = time.perf_counter() - began
        results["puts"] = _put_records(source, args.keys, args.wal_records)
        results["archived_after_s"] = source.wait_archived(source.commit_lsn())
        latest = source.status()["archive"]["last_snapshot"]
        if latest != snapshot:
            results["note"] = (
                f"another snapshot ({latest}) was archived during the PUTs: the restore replays fewer "
                "records than written; raise --snapshot-interval"
            )
        source.close()
        cluster_key = source.launcher.data_dir / "cluster.key"

    restored_dir = folder / "restored"
    kvctl = Path(sys.executable).parent / "kvctl"
    began = time.perf_counter()
    completed = subprocess.run(
        [str(kvctl), "restore", url, "--data-dir", str(restored_dir), "--format", "json"],
        capture_output=True,
        text=True,
    )
    results["restore_s"] = time.perf_counter() - began
    if completed.returncode != 0:
        raise RuntimeError(f"kvctl restore exited with {completed.returncode}:\n{completed.stderr}{completed.stdout}")
    results["restore"] = json.loads(completed.stdout)
    # The catalog's signing keys are sealed with the cluster key: the restored node needs the same.
    shutil.copy2(cluster_key, restored_dir / "cluster.key")
    with _nodes() as start:
        began = time.perf_counter()
        restored = start(restored_dir, {"KVSTORE_FSYNC": "off"})
        results["start_to_ready_s"] = time.perf_counter() - began
        response = httpx.get(f"{restored.url}/v1/kv/key:{args.keys - 1:08d}", headers=restored.headers, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"the restored node lacks the last loaded key: {response.status_code} {response.text}")
    print(
        f"\nrestore of {args.keys:,} keys + {results['puts']:,} PUTs: kvctl restore {results['restore_s']:.1f} s "
        f"({results['restore']['records_replayed']:,} WAL records replayed), start to /ready "
        f"{results['start_to_ready_s']:.1f} s"
    )
    return results


# -- the report --------------------------------------------------------------------------------


def _spread(values: list[float], form: str) -> str:
    """The rounds' values as 'low-high' (one value alone when they agree in this format)."""
    low, high = format(min(values), form), format(max(values), form)
    return low if low == high else f"{low}-{high}"


def _used_s3(args: argparse.Namespace) -> bool:
    return not args.no_s3 and not {"latency", "throughput"} <= set(args.skip)


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    lines = [
        f"`python -m bench.archive_bench {' '.join(sys.argv[1:])}` on {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores shared by the nodes, "
        f"wrk{' and SeaweedFS' if _used_s3(args) else ''} (load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}.",
    ]
    if "latency" in results:
        rows = results["latency"]
        lines += [
            "",
            f"## Write latency: PUT, wrk -t1 -c{args.connections}, {args.duration:g} s windows, "
            f"{args.rounds} rounds alternated, archive_timeout_s={args.archive_timeout:g}",
            "",
            "Ranges are the rounds' low-high.",
            "",
            "| fsync | archive | req/s | vs off | p50 ms | p99 ms | archived after the window (s) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for fsync in args.fsync:
            base = [r["requests_per_s"] for r in rows if r["fsync"] == fsync and r["archive"] == "off"]
            for store in dict.fromkeys(r["archive"] for r in rows):
                mine = [r for r in rows if r["fsync"] == fsync and r["archive"] == store]
                rps = [r["requests_per_s"] for r in mine]
                ratio = sum(rps) / sum(base)
                catch_up = [r["catch_up_s"] for r in mine if r["catch_up_s"] is not None]
                lines.append(
                    f"| {fsync} | {store} | {_spread(rps, ',.0f')} | {ratio:.2f}x | "
                    f"{_spread([r['p50_ms'] for r in mine], '.2f')} | {_spread([r['p99_ms'] for r in mine], '.1f')} | "
                    f"{_spread(catch_up, '.2f') if catch_up else '-'} |"
                )
    if "throughput" in results:
        lines += [
            "",
            f"## Archive throughput: {args.wal_mib} MiB of WAL (/v1/txn, {TXN_OPS} x 1 KiB values, "
            f"{TXN_CONNECTIONS} connections, fsync off), 16 MiB segments, archive_timeout_s={args.archive_timeout:g}",
            "",
            'MB = 10^6 bytes. archived MB/s: kvstore_archive_bytes_total{kind="wal"} over the write window; '
            "drain: from the last write until archived_lsn reaches the last commit (the open segment waits "
            "archive_timeout_s). On a backlog: the same WAL written with archiving off, the node restarted with it "
            "on, its completed segments archived at once (first to last).",
            "",
            "| archive | WAL MB | write MB/s | archived MB/s during writes | backlog at the end MB | drain s | drain MB/s "
            "| archiver MB/s on a backlog |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["throughput"]:
            lines.append(
                f"| {row['archive']} | {row['wal_mb']:.0f} | {row['write_mb_s']:.1f} | "
                f"{row['archived_during_writes_mb_s']:.1f} | {row['backlog_mb']:.1f} | {row['drain_s']:.2f} | "
                f"{row['drain_mb_s']:.1f} | {row['backlog_rate_mb_s']:.1f} |"
            )
    if "restore" in results:
        found, restored = results["restore"], results["restore"]["restore"]
        lines += [
            "",
            f"## Restore: {found['keys']:,} keys (100-byte values) + {found['puts']:,} single-key PUTs, file:// archive",
            "",
            f"- load {found['load_s']:.0f} s; archived snapshot after the load {restored['snapshot']} "
            f"(waited {found['snapshot_wait_s']:.0f} s); PUTs archived {found['archived_after_s']:.1f} s after the last",
            f"- `kvctl restore`: {found['restore_s']:.1f} s wall ({restored['seconds']} s by its own count): "
            f"{restored['downloaded_bytes'] / MB:.0f} MB downloaded ({restored['segments']} WAL segments), "
            f"{restored['records_replayed']:,} WAL records replayed",
            f"- `kvstored --data-dir` of the restored directory until /ready: {found['start_to_ready_s']:.1f} s",
        ]
        if "note" in found:
            lines.append(f"- note: {found['note']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each wrk window")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fsync", nargs="+", default=["always", "off"], choices=("always", "interval", "off"))
    parser.add_argument("--archive-timeout", type=float, default=1.0, help="archive_timeout_s of the nodes")
    parser.add_argument("--wal-mib", type=int, default=256, help="MiB of WAL per throughput run")
    parser.add_argument("--no-s3", action="store_true", help="file:// archives only (no SeaweedFS)")
    parser.add_argument("--skip", action="append", default=[], choices=("latency", "throughput"))
    parser.add_argument("--restore", action="store_true", help="also measure a restore (several minutes)")
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys loaded before a restore")
    parser.add_argument("--wal-records", type=int, default=100_000, help="PUTs after the restore's snapshot")
    parser.add_argument(
        "--snapshot-interval",
        type=float,
        default=60.0,
        help="archive_snapshot_interval_s of the restore's node: longer than the PUTs take, so they stay WAL",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS_PATH.name}")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kvarchive-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        s3 = stack.enter_context(seaweedfs(folder / "seaweedfs")) if _used_s3(args) else None
        if "latency" not in args.skip:
            results["latency"] = latency(args, folder, s3)
        if "throughput" not in args.skip:
            results["throughput"] = throughput(args, folder, s3)
        stack.close()  # SeaweedFS stops before the restore: it would only take CPU from it
        if args.restore:
            results["restore"] = restore(args, folder)
    text = report(args, results)
    print("\n" + text)
    if args.write:
        RESULTS_PATH.write_text("# Continuous archiving: write cost, archive throughput, restore time\n\n" + text)


if __name__ == "__main__":
    main()
