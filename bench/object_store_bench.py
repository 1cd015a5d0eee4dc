"""boto3 against obstore: upload and download MB/s of one big object to a local SeaweedFS.

    python -m bench.object_store_bench [--mib 64] [--rounds 3] [--write]

Starts SeaweedFS (`weed mini`, the tests' launcher in tests/support/s3server.py) on loopback,
then for each client uploads a --mib object from a file and downloads it to memory, --rounds
times, each upload under a new name (writes are create-only, as the archive makes them):
- archive S3Store (boto3): what the node ships: SHA-256 pass, 16 MiB parts one after another,
  If-None-Match, download hashed as it streams;
- boto3 upload_file/download_fileobj: boto3's managed transfer (parts in 10 threads);
- obstore put/get: Rust object_store, multipart with up to 12 parts in flight.
Prints MB/s (median of the rounds); --write writes bench/results/RESULTS-object-store.md.
Loopback on one machine: it measures each client's own cost, not a network.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import obstore
from obstore.store import S3Store as ObstoreS3

from kvstore.node.archive.s3 import S3Store

from .paths import REPOSITORY, results_file

sys.path.insert(0, str(REPOSITORY / "tests"))  # the tests' SeaweedFS launcher
from support.s3server import S3Server, seaweedfs  # type: ignore[import-not-found]  # noqa: E402

RESULTS_PATH = results_file("object-store")
MIB = 1 << 20


def _timed(action: Callable[[str], object], name: str) -> float:
    started = time.perf_counter()
    action(name)
    return time.perf_counter() - started


def _rounds(
    rounds: int, mib: int, upload: Callable[[str], object], download: Callable[[str], object]
) -> tuple[float, float]:
    up, down = [], []
    for index in range(rounds):
        name = f"object-{index}-{time.monotonic_ns()}"
        up.append(mib / _timed(upload, name))
        down.append(mib / _timed(download, name))
    return statistics.median(up), statistics.median(down)


def run(server: S3Server, source: Path, mib: int, rounds: int) -> dict[str, tuple[float, float]]:
    os.environ.update(server.env)
    results: dict[str, tuple[float, float]] = {}

    archive = S3Store(server.bucket, "bench/archive")
    scratch = source.parent / "download"

    def archive_put(name: str) -> None:
        with source.open("rb") as f:
            archive.put(name, f)

    results["archive S3Store (boto3)"] = _rounds(rounds, mib, archive_put, lambda name: archive.get(name, scratch))

    client = server.client()
    results["boto3 managed transfer"] = _rounds(
        rounds,
        mib,
        lambda name: client.upload_file(str(source), server.bucket, f"bench/boto3/{name}"),
        lambda name: client.download_fileobj(server.bucket, f"bench/boto3/{name}", io.BytesIO()),
    )

    store = ObstoreS3(
        server.bucket,
        endpoint=server.endpoint,
        access_key_id=server.env["AWS_ACCESS_KEY_ID"],
        secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"],
        region=server.env["AWS_REGION"],
        client_options={"allow_http": True},
    )
    results["obstore"] = _rounds(
        rounds,
        mib,
        lambda name: obstore.put(store, f"bench/obstore/{name}", source, mode="create"),
        lambda name: obstore.get(store, f"bench/obstore/{name}").bytes(),
    )
    return results


def report(results: dict[str, tuple[float, float]], mib: int, rounds: int) -> str:
    lines = [
        "# Object store clients: boto3 against obstore",
        "",
        f"`python -m bench.object_store_bench --mib {mib} --rounds {rounds} --write` on {platform.node()} "
        f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end), SeaweedFS "
        f"`weed mini` on loopback, boto3 {boto3.__version__}, obstore {obstore.__version__}. One {mib} MiB "
        f"object from a file; median of {rounds} rounds.",
        "",
        "| client | upload MB/s | download MB/s |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {up:.0f} | {down:.0f} |" for name, (up, down) in results.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "object"
        source.write_bytes(os.urandom(args.mib * MIB))
        with seaweedfs(Path(tmp) / "seaweedfs") as server:
            results = run(server, source, args.mib, args.rounds)
    text = report(results, args.mib, args.rounds)
    print(text)
    if args.write:
        RESULTS_PATH.write_text(text)


if __name__ == "__main__":
    main()
