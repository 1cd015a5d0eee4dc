"""Crash safety with real processes: SIGKILL under load, restart, nothing acknowledged lost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from kvstore.node import records
from kvstore.node.wal.format import FRAME_HEADER_BYTES
from kvstore.node.wal.reader import WalScan
from kvstore.node.wal.segments import list_segments
from support.harness import NodeProcess

WRITERS = 16
KEYS_PER_WRITER = 40


class Ledger:
    """What each writer sent and what the node acknowledged."""

    def __init__(self) -> None:
        self.acked: dict[str, bytes] = {}  # key -> last acknowledged value
        self.in_flight: dict[str, bytes] = {}  # key -> value sent, outcome unknown
        self.counter_acked_max = 0
        self.acks = 0


async def _writer(client: httpx.AsyncClient, writer_id: int, ledger: Ledger, stop: asyncio.Event) -> None:
    sequence = 0
    while not stop.is_set():
        key = f"w{writer_id}:{sequence % KEYS_PER_WRITER}"
        value = f"{key}#{sequence}".encode()
        ledger.in_flight[key] = value
        try:
            if sequence % 5 == 0:
                response = await client.post("/v1/kv/counter/incr")
                if response.status_code == 200:
                    ledger.counter_acked_max = max(ledger.counter_acked_max, response.json()["value"])
            response = await client.put(f"/v1/kv/{key}", content=value)
        except httpx.TransportError:
            return  # the node is gone; this write's outcome is unknown
        if response.status_code in (200, 201):
            ledger.acked[key] = value
            del ledger.in_flight[key]
            ledger.acks += 1
        sequence += 1


async def _checkpointer(client: httpx.AsyncClient, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await client.post("/v1/admin/checkpoint")
        except httpx.TransportError:
            return
        await asyncio.sleep(0.2)


async def _load_then_kill(node: NodeProcess, ledger: Ledger, min_acks: int, with_checkpoints: bool) -> None:
    stop = asyncio.Event()
    async with node.async_client(limits=httpx.Limits(max_connections=WRITERS + 2)) as client:
        tasks = [asyncio.create_task(_writer(client, w, ledger, stop)) for w in range(WRITERS)]
        if with_checkpoints:
            tasks.append(asyncio.create_task(_checkpointer(client, stop)))
        deadline = time.monotonic() + 60
        while ledger.acks < min_acks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        node.kill()  # SIGKILL mid-load: requests are in flight right now
        stop.set()
        await asyncio.gather(*tasks)
    assert ledger.acks >= min_acks


def _check_everything_acknowledged_is_there(node: NodeProcess, ledger: Ledger) -> None:
    with node.client() as client:
        for key, value in ledger.acked.items():
            response = client.get(f"/v1/kv/{key}")
            assert response.status_code == 200, f"acknowledged key {key} lost"
            # A later write whose outcome was unknown at the kill may have landed instead.
            assert response.content in (value, ledger.in_flight.get(key)), f"{key}: {response.content!r} != {value!r}"
        counter = int(client.get("/v1/kv/counter").content)
        assert counter >= ledger.counter_acked_max


@pytest.mark.parametrize("fsync", ["always", "interval", "off"])
def test_sigkill_under_load_loses_no_acknowledged_write(node_factory, fsync: str) -> None:  # type: ignore[no-untyped-def]
    # A process crash (not a power cut) loses nothing under any policy: every policy
    # writes a record into the page cache before the write is acknowledged.
    node = node_factory(env={"KVSTORE_FSYNC": fsync}).start()
    ledger = Ledger()
    asyncio.run(_load_then_kill(node, ledger, min_acks=1500, with_checkpoints=False))
    assert "shut down" not in node.log()
    node.restart()
    _check_everything_acknowledged_is_there(node, ledger)


def test_sigkill_with_checkpoints_and_segment_recycling_loses_nothing(node_factory) -> None:  # type: ignore[no-untyped-def]
    env = {"KVSTORE_FSYNC": "always", "KVSTORE_WAL_SEGMENT_SIZE_BYTES": "65536"}
    node = node_factory(env=env).start()
    ledger = Ledger()
    asyncio.run(_load_then_kill(node, ledger, min_acks=2000, with_checkpoints=True))
    assert '"checkpoint complete"' in node.log().replace("'", '"') or "checkpoint complete" in node.log()
    node.restart()
    _check_everything_acknowledged_is_there(node, ledger)
    # Checkpoints recycled old segments while the load ran.
    assert list_segments(node.data_dir / "WAL")[0].start_lsn > 0


def test_torn_tail_is_cut_kept_and_logged_on_restart(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()
    with node.client() as client:
        for i in range(20):
            client.put(f"/v1/kv/k{i}", content=b"v")
    node.kill()
    last = list_segments(node.data_dir / "WAL")[-1]
    with open(last.path, "ab") as file:
        file.write(b"\x40\x00\x00\x00\x12\x34")  # a frame header promising 64 bytes that never came
    node.restart()
    broken = list((node.data_dir / "WAL").glob("*.broken"))
    assert len(broken) == 1 and broken[0].read_bytes() == b"\x40\x00\x00\x00\x12\x34"
    assert "torn WAL tail cut" in node.log()
    with node.client() as client:
        assert all(client.get(f"/v1/kv/k{i}").status_code == 200 for i in range(20))
        assert client.put("/v1/kv/after", content=b"ok").status_code == 201


def test_mid_log_corruption_refuses_to_start_naming_file_and_lsn(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()
    with node.client() as client:
        for i in range(20):
            client.put(f"/v1/kv/k{i}", content=b"value")
    node.kill()
    wal_dir = node.data_dir / "WAL"
    items = list(WalScan(wal_dir, records.decode))
    victim = items[len(items) // 2]
    segment = victim.segment
    data = bytearray(segment.path.read_bytes())
    data[victim.lsn - segment.start_lsn + FRAME_HEADER_BYTES + 1] ^= 0xFF
    segment.path.write_bytes(bytes(data))
    process = node.spawn()
    assert process.wait(30) == 4
    log = node.log()
    assert segment.path.name in log
    lsn_text = f"{victim.lsn >> 32:X}/{victim.lsn & 0xFFFFFFFF:X}"
    assert lsn_text in log and "refusing to start" in log


def test_second_node_on_the_same_data_dir_refuses_to_start(node_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = node_factory("shared").start()
    second = NodeProcess(first.data_dir)
    try:
        assert second.spawn().wait(30) == 3
        assert "in use by another kvstored" in second.log()
    finally:
        second.close()
    with first.client() as client:
        assert client.put("/v1/kv/still", content=b"fine").status_code == 201


def test_sigkill_leaves_no_process_behind(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()
    assert node.process is not None
    pid = node.process.pid
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    assert children == []  # one process: no server workers to orphan
    node.kill()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    try:
        httpx.get(f"{node.url}/health", timeout=1)
        raise AssertionError("something still serves the killed node's port")
    except httpx.TransportError:
        pass
    node.restart()  # the lock died with the process
    assert os.path.exists(node.data_dir / "kvstored.pid")
