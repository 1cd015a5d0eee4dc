"""A watcher whose client stops reading, against a real node: the node holds it back (its
memory does not grow with what is written), writers never notice, and after
watch_stall_timeout_s it is cut off with a reason, counted and logged, while a watcher that
reads gets every event."""

from __future__ import annotations

import socket

from support.harness import NodeProcess
from support.rawhttp import request_head
from support.waiting import wait_until
from support.watching import WAIT_S, Watch

VALUE_BYTES = 512 * 1024
WRITES = 128  # 64 MiB of values, about 85 MiB of events once in base64
RSS_GROWTH_BOUND = 32 * 1024 * 1024
CUTOFF_METRIC = 'kvstore_watch_cutoffs_total{reason="slow_watcher"} 1.0'


def _stalled_watch(node: NodeProcess) -> socket.socket:
    """A watch whose client reads nothing, with a small receive buffer so the node's fills soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    sock.sendall(request_head("GET", "/v1/watch?prefix=big:", {"Authorization": f"Bearer {node.token()}"}))
    return sock


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the node sends until it closes the connection."""
    sock.settimeout(WAIT_S)
    received = bytearray()
    while chunk := sock.recv(1 << 20):
        received += chunk
    return bytes(received)


def test_a_stalled_watcher_is_held_back_then_cut_off_and_writers_never_wait(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_WATCH_STALL_TIMEOUT_S": "2"}).start()
    value = b"v" * VALUE_BYTES
    with node.client() as admin:
        # Warm up first: the WAL tail replication reads from (16 MiB), allocator arenas.
        for n in range(64):
            assert admin.put(f"/v1/kv/warm:{n % 4}", content=value).status_code in (200, 201)
        baseline = node.rss_bytes()
        reader = Watch(node.client(), {"prefix": "big:"})
        assert reader.status == 200
        stalled = _stalled_watch(node)
        try:
            wait_until(lambda: "\nkvstore_watchers 2.0\n" in admin.get("/metrics").text, WAIT_S, "both watchers")
            peak = baseline
            for n in range(WRITES):
                # Every write is acknowledged within the client's usual timeout (30 s).
                assert admin.put(f"/v1/kv/big:{n % 4}", content=value).status_code in (200, 201)
                peak = max(peak, node.rss_bytes())
            wait_until(lambda: CUTOFF_METRIC in admin.get("/metrics").text, WAIT_S, "the slow watcher's cut-off")
            peak = max(peak, node.rss_bytes())
            assert peak - baseline < RSS_GROWTH_BOUND, f"the node grew by {(peak - baseline) >> 20} MiB"
            # The node ends the stream with the reason, and closes the connection once it is read.
            received = _read_to_end(stalled)
        finally:
            stalled.close()
        end = b"\n\r\n0\r\n\r\n"  # the last line's newline, then the chunked body's end
        assert received.endswith(end)
        last = received[: -len(end)].rsplit(b"\n", 1)[-1]
        assert b'"type":"cancelled","reason":"slow_watcher"' in last
        assert '"msg":"slow watcher cut off","reason":"slow_watcher","user":"admin"' in node.log()
        # The reading watcher saw every write, in order, and still runs.
        events = reader.events(WRITES)
        assert [event["key"] for event in events] == [f"big:{n % 4}" for n in range(WRITES)]
        assert "\nkvstore_watchers 1.0\n" in admin.get("/metrics").text
        reader.close()
