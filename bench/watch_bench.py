"""What the watch's hold on a slow client costs and bounds, on one node (fsync=off).

    python -m bench.watch_bench [--mib 128] [--value-kib 512]

1. Writes: PUT rate and the node's peak RSS while a watcher whose client reads nothing is
   open (it is cut off after watch_stall_timeout_s, here 2 s), against the same writes with
   no watcher before and after: a stalled watcher must not slow writers nor grow the node.
2. Catch-up: one watcher reading the whole WAL written in 1 from the start, as fast as this
   process reads it (MiB of NDJSON per second): the price of waiting for the send queue to
   drain after each MiB.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import httpx

from kvstore.chaos.launcher import NodeLauncher

PASSWORD = "bench-admin-password"
ENV = {
    "KVSTORE_FSYNC": "off",
    "KVSTORE_WATCH_STALL_TIMEOUT_S": "2",
    "KVSTORE_CHECKPOINT_WAL_BYTES": str(4 << 30),  # keep the whole WAL for the catch-up
    "KVSTORE_WAL_SEGMENT_SIZE_BYTES": str(64 << 20),
}


def _writes(node: NodeLauncher, client: httpx.Client, prefix: str, count: int, value: bytes) -> tuple[float, int]:
    """PUTs per second, and the node's peak RSS meanwhile."""
    peak = node.rss_bytes()
    started = time.perf_counter()
    for n in range(count):
        client.put(f"/v1/kv/{prefix}{n % 4}", content=value).raise_for_status()
        if n % 8 == 0:
            peak = max(peak, node.rss_bytes())
    return count / (time.perf_counter() - started), max(peak, node.rss_bytes())


def _stalled_watcher(node: NodeLauncher, prefix: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    head = f"GET /v1/watch?prefix={prefix} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.token()}\r\n\r\n"
    sock.sendall(head.encode())
    return sock


def _catch_up(client: httpx.Client, prefix: str, events: int) -> tuple[float, int]:
    """Seconds to read `events` events from the WAL's start, and their bytes."""
    seen = size = 0
    started = time.perf_counter()
    with client.stream("GET", "/v1/watch", params={"prefix": prefix, "from_lsn": "0/0"}, timeout=None) as stream:
        for line in stream.iter_lines():
            size += len(line) + 1
            if '"type":"set"' in line:
                seen += 1
                if seen == events:
                    break
    return time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=128, help="MiB of values written per phase")
    parser.add_argument("--value-kib", type=int, default=512)
    args = parser.parse_args()
    value = b"v" * (args.value_kib * 1024)
    count = args.mib * 1024 // args.value_kib
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeLauncher(Path(tmp) / "node", PASSWORD, env=ENV)
        node.start()
        try:
            with httpx.Client(base_url=node.url, headers={"authorization": f"Bearer {node.token()}"}) as client:
                _writes(node, client, "warm:", 64, value)  # the WAL tail's window, allocator arenas
                baseline = node.rss_bytes()
                alone, alone_peak = _writes(node, client, "alone:", count, value)
                stalled = _stalled_watcher(node, "big:")
                try:
                    watched, watched_peak = _writes(node, client, "big:", count, value)
                finally:
                    stalled.close()
                after, after_peak = _writes(node, client, "after:", count, value)
                seconds, size = _catch_up(client, "big:", count)
        finally:
            node.stop()
    mib = 1 << 20
    print(
        f"{args.mib} MiB of {args.value_kib} KiB values per phase, fsync=off, node RSS after warm-up {baseline // mib} MiB"
    )
    print(f"writes, no watcher:           {alone:7.1f} PUT/s  peak RSS +{(alone_peak - baseline) // mib} MiB")
    print(f"writes, one stalled watcher:  {watched:7.1f} PUT/s  peak RSS +{(watched_peak - baseline) // mib} MiB")
    print(f"writes, no watcher again:     {after:7.1f} PUT/s  peak RSS +{(after_peak - baseline) // mib} MiB")
    print(
        f"catch-up from 0/0:            {size / mib / seconds:7.1f} MiB/s of events ({size // mib} MiB in {seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
