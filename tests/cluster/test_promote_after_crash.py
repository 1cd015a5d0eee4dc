"""Promotion is for the disaster case: the primary is gone and a replica was SIGKILLed and
restarted on its own. Whatever state the kill left the replica's WAL in, it can be promoted,
takes writes, keeps every key it had, and recovers its new timeline after another SIGKILL.
A live replica not yet past its base backup's redo LSN is refused, saying what to do."""

from __future__ import annotations

import httpx
import pytest

from kvstore.chaos.proxy import LinkProxy
from kvstore.node import records
from kvstore.node.control import read_control
from kvstore.node.wal.format import FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, format_lsn, segment_name
from kvstore.node.wal.reader import WalScan
from kvstore.node.wal.segments import list_segments
from kvstore.replication.protocol import encode_segment_start
from support.fake_peer import FakePeer, json_answer
from support.harness import MakeNode, NodeProcess
from support.replication import REPLICATION_ENV, VALUE, admin_get, assert_converged, make
from support.waiting import wait_until

BASE_KEYS = 300  # about 45 KB of WAL: the base backup's redo LSN lies well inside a 64 KiB segment
RECEIVED_KEYS = 100


def refuse_streams(request_head: bytes, offset: int, data: bytes) -> bytes:
    """The replica's base backup gets through; every WAL stream answers garbage instead of HTTP."""
    if b"/v1/replication/stream" in request_head:
        return b"not http\r\n\r\n"
    return data


def cut_before_redo(replica: NodeProcess) -> None:
    """What a crash in the middle of the first catch-up leaves: the WAL ends in a torn record
    before the base backup's redo LSN (the snapshot already holds everything in it)."""
    wal = replica.data_dir / "WAL"
    redo_lsn = read_control(replica.data_dir / "control").redo_lsn
    before = [item for item in WalScan(wal, records.decode) if item.end_lsn <= redo_lsn]
    assert len(before) > 2, "the test needs WAL between the segment start and the redo LSN"
    victim = before[len(before) // 2]
    for segment in list_segments(wal):
        if segment.start_lsn > victim.lsn:
            segment.path.unlink()
    with open(victim.segment.path, "r+b") as file:
        file.truncate(victim.lsn - victim.segment.start_lsn + FRAME_HEADER_BYTES + 3)


def torn_record_at_the_end(replica: NodeProcess) -> None:
    last = list_segments(replica.data_dir / "WAL")[-1]
    with open(last.path, "ab") as file:
        file.write(b"\x40\x00\x00\x00\x12\x34")  # a frame header promising 64 bytes that never came


def segment_without_header(replica: NodeProcess) -> None:
    """A crash right after the first segment file was created, before its header reached it.
    It ends before the snapshot's redo LSN: the start removes it, leaving WAL/ empty."""
    start_lsn = read_control(replica.data_dir / "control").replica_start_lsn
    assert start_lsn is not None
    (replica.data_dir / "WAL" / segment_name(start_lsn)).write_bytes(b"")


STATES = {
    # state: (the replica streams WAL, keys written after its base backup, what the crash left)
    "only-a-base-backup": (False, 0, None),
    "empty-wal-directory": (False, 0, segment_without_header),
    "partial-segment-before-the-redo-lsn": (True, 0, cut_before_redo),
    "partial-segment-with-received-wal": (True, RECEIVED_KEYS, torn_record_at_the_end),
}


def check_keys(node: NodeProcess, keys: dict[str, str]) -> None:
    with node.client() as client:
        for key, value in keys.items():
            response = client.get(f"/v1/kv/{key}")
            assert response.status_code == 200 and response.text == value, key


@pytest.mark.parametrize("state", list(STATES))
def test_a_replica_killed_in_any_state_is_promoted_and_recovers_its_new_timeline(
    node_factory: MakeNode, state: str
) -> None:
    streams, received_keys, crash_damage = STATES[state]
    primary = make(node_factory, "p").start()
    keys = {f"base:{n}": f"{n}-{VALUE}" for n in range(BASE_KEYS)}
    with primary.client() as client:
        for key, value in keys.items():
            assert client.put(f"/v1/kv/{key}", content=value).status_code == 201
    proxy = LinkProxy(primary.port, damage=None if streams else refuse_streams)
    try:
        replica = make(node_factory, "r1", replica_of=proxy.url).start()
        if streams:
            received = {f"received:{n}": f"{n}-{VALUE}" for n in range(received_keys)}
            with primary.client() as client:
                for key, value in received.items():
                    assert client.put(f"/v1/kv/{key}", content=value).status_code == 201
            keys |= received
            assert_converged(primary, replica)
        else:
            wait_until(lambda: "replication stream failed" in replica.log(), what="a refused stream")
        replica.kill()
        primary.kill()
    finally:
        proxy.close()
    if not streams:
        assert list_segments(replica.data_dir / "WAL") == []
    if crash_damage is not None:
        crash_damage(replica)

    replica.restart()  # the primary is gone: the disaster promotion exists for
    with replica.client() as client:
        promoted = client.post("/v1/admin/promote")
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["timeline"] == 2
        assert client.put("/v1/kv/after-promotion", content=b"1").status_code == 201
    check_keys(replica, keys)

    replica.kill()  # and the new timeline's WAL recovers
    replica.restart()
    status = admin_get(replica, "/v1/status")
    assert (status["role"], status["state"], status["timeline"]) == ("primary", "running", 2)
    check_keys(replica, {**keys, "after-promotion": "1"})
    with replica.client() as client:
        assert client.put("/v1/kv/after-restart", content=b"2").status_code == 201


def test_a_replica_still_short_of_its_redo_lsn_is_refused_promotion_until_restarted(node_factory: MakeNode) -> None:
    """Its primary went while it caught up after its base backup: its WAL ends before the
    snapshot's redo LSN, and a timeline begun there would overlap what the snapshot holds."""
    primary = make(node_factory, "p").start()
    keys = {f"base:{n}": f"{n}-{VALUE}" for n in range(BASE_KEYS)}
    with primary.client() as client:
        for key, value in keys.items():
            assert client.put(f"/v1/kv/{key}", content=value).status_code == 201
    # A stand-in for the primary: the real base backup, then a stream that starts a segment and ends.
    login = {
        "username": REPLICATION_ENV["KVSTORE_REPLICATION_USER"],
        "password": REPLICATION_ENV["KVSTORE_REPLICATION_PASSWORD"],
    }
    token = httpx.post(f"{primary.url}/v1/auth/login", json=login, timeout=30).json()["token"]
    headers = {"authorization": f"Bearer {token}"}
    identity = httpx.get(f"{primary.url}/v1/replication/identify", headers=headers, timeout=30)
    backup = httpx.get(f"{primary.url}/v1/replication/basebackup", params={"slot": "r1"}, headers=headers, timeout=30)
    primary.kill()
    start_lsn, redo_lsn = int(backup.headers["x-kv-start-lsn"]), int(backup.headers["x-kv-redo-lsn"])
    assert redo_lsn > start_lsn + SEGMENT_HEADER_BYTES
    fake = FakePeer(json_answer({"error": {"code": "not_found", "message": "no such route"}}, 404))
    fake.answers["/v1/auth/login"] = json_answer({"token": token})
    fake.answers["/v1/replication/identify"] = (200, "application/json", identity.content)
    fake.answers["/v1/replication/basebackup"] = (200, "application/octet-stream", backup.content)
    fake.headers["/v1/replication/basebackup"] = [(k, v) for k, v in backup.headers.items() if k.startswith("x-kv-")]
    fake.answers["/v1/replication/stream"] = (200, "application/x-kvstore-wal", encode_segment_start(start_lsn, 1))
    try:
        replica = make(node_factory, "r1", replica_of=fake.url).start()
        wal = replica.data_dir / "WAL"
        wait_until(lambda: [s.size_bytes for s in list_segments(wal)] == [SEGMENT_HEADER_BYTES], what="a segment start")

        with replica.client() as client:
            refused = client.post("/v1/admin/promote")

        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["message"] == (
            f"this replica's WAL ends at {format_lsn(start_lsn + SEGMENT_HEADER_BYTES)}, before its base backup's "
            f"redo LSN {format_lsn(redo_lsn)} (it was catching up when its primary went): restart it (the start "
            "removes that WAL, which its snapshot holds) and promote it then"
        )
        assert admin_get(replica, "/v1/status")["role"] == "replica"
        replica.kill()
    finally:
        fake.close()
    replica.restart()
    with replica.client() as client:
        assert client.post("/v1/admin/promote").status_code == 200
        assert client.put("/v1/kv/after-promotion", content=b"1").status_code == 201
    check_keys(replica, keys)
