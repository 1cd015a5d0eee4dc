"""`rejoin` after a failover, one test per plan: the former primary ends up streaming from the
new primary, with the new timeline's data and without its own divergent writes, and whatever
it held beyond the branch point is kept in diverged/ byte for byte. A rebootstrap killed
before its base backup resumes it at the next start, whatever that start's flags say."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from kvstore.node import records
from kvstore.node.control import STATE_NEEDS_BASE_BACKUP, read_control
from kvstore.node.records import SET
from kvstore.node.wal.reader import WalScan
from support.harness import MakeNode, NodeProcess
from support.replication import VALUE, admin_get, assert_converged, make
from support.waiting import wait_until

SHARED_KEYS = 100
DIVERGENT_KEYS = 50


def pair(node_factory: MakeNode) -> tuple[NodeProcess, NodeProcess]:
    """A primary and its replica, each naming the other as a peer."""
    primary, replica = make(node_factory, "p"), make(node_factory, "r1")
    primary.extra_args += ["--peers", replica.url]
    replica.extra_args += ["--replica-of", primary.url, "--peers", primary.url]
    primary.start()
    replica.start()
    return primary, replica


def put(node: NodeProcess, prefix: str, count: int) -> None:
    with node.client() as client:
        for n in range(count):
            assert client.put(f"/v1/kv/{prefix}:{n}", content=VALUE).status_code == 201


def wal_files(data_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((data_dir / "WAL").glob("*.wal"))}


def fail_over(node_factory: MakeNode, plan: str) -> tuple[NodeProcess, NodeProcess, dict[str, bytes]]:
    """The replica is promoted while the primary is down; for `rewind` and `rebootstrap` the
    primary first acknowledged writes the replica never got (and for `rebootstrap` took a
    checkpoint after them). Returns (the fenced old primary, the new primary, its old WAL)."""
    primary, replica = pair(node_factory)
    put(primary, "shared", SHARED_KEYS)
    assert_converged(primary, replica)
    if plan != "follow":
        replica.kill()
        put(primary, "divergent", DIVERGENT_KEYS)  # acknowledged by an asynchronous primary alone
        if plan == "rebootstrap":
            with primary.client() as client:
                assert client.post("/v1/admin/checkpoint").status_code == 200
    primary.kill()
    old_wal = wal_files(primary.data_dir)
    if plan != "follow":
        replica.restart()
    with replica.client() as client:
        assert client.post("/v1/admin/promote").status_code == 200
        assert client.put("/v1/kv/new-timeline", content=b"1").status_code == 201
    primary.restart()
    assert admin_get(primary, "/v1/status")["state"] == "fenced"
    return primary, replica, old_wal


def ask_rejoin(node: NodeProcess, primary: NodeProcess) -> dict[str, Any]:
    with node.client() as client:
        response = client.post("/v1/admin/rejoin", json={"primary": primary.url})
    assert response.status_code == 202, response.text
    return dict(response.json())


def streams_from(node: NodeProcess, primary: NodeProcess) -> bool:
    status = admin_get(node, "/v1/status")
    replication = status["replication"] or {}
    return (status["role"], replication.get("state"), replication.get("primary")) == (
        "replica",
        "streaming",
        primary.url,
    )


def check_rejoined(node: NodeProcess, primary: NodeProcess) -> None:
    wait_until(lambda: streams_from(node, primary), 60, "the rejoined node to stream from the new primary")
    assert_converged(primary, node)
    with node.client() as client:
        assert client.get("/v1/kv/new-timeline").text == "1"
        assert client.get(f"/v1/kv/shared:{SHARED_KEYS - 1}").status_code == 200
        assert client.get("/v1/kv/divergent:0").status_code == 404


def divergent_keys_in(wal_dir: Path) -> set[str]:
    return {
        item.record[1]
        for item in WalScan(wal_dir, records.decode)
        if item.record[0] == SET and item.record[1].startswith("div")
    }


@pytest.mark.parametrize("plan", ["follow", "rewind", "rebootstrap"])
def test_rejoin_ends_streaming_from_the_new_primary_with_the_divergent_data_kept(
    node_factory: MakeNode, plan: str
) -> None:
    old_primary, new_primary, old_wal = fail_over(node_factory, plan)

    answer = ask_rejoin(old_primary, new_primary)

    assert answer["action"] == plan
    check_rejoined(old_primary, new_primary)
    if plan == "follow":
        assert answer["divergent_bytes"] == 0 and answer["kept_in"] is None
        assert not (old_primary.data_dir / "diverged").exists()
        return
    kept = Path(answer["kept_in"])
    assert kept.parent == old_primary.data_dir / "diverged"
    # What was moved aside is as private as the rest of the data directory.
    kept_folders = [kept.parent, kept, *(path for path in kept.rglob("*") if path.is_dir())]
    assert {oct(stat.S_IMODE(folder.stat().st_mode)) for folder in kept_folders} == {"0o700"}
    assert divergent_keys_in(old_primary.data_dir / "WAL") == set()  # its own WAL is the new primary's now
    if plan == "rewind":
        # Whole segments past the branch point, and the tail cut off the one it lies in.
        high, low = answer["switch_lsn"].split("/")
        switch_lsn = (int(high, 16) << 32) | int(low, 16)
        pieces = {path.name: path.read_bytes() for path in kept.iterdir()}
        assert sum(map(len, pieces.values())) == answer["divergent_bytes"] > DIVERGENT_KEYS * len(VALUE)
        for name, data in pieces.items():
            segment = name.removesuffix(".tail")
            start_lsn = int(segment.removesuffix(".wal"), 16)
            assert data == (old_wal[segment][switch_lsn - start_lsn :] if name.endswith(".tail") else old_wal[segment])
    else:
        # The whole data directory as it was: its WAL byte for byte, its snapshots, its control.
        assert wal_files(kept) == old_wal
        assert divergent_keys_in(kept / "WAL") == {f"divergent:{n}" for n in range(DIVERGENT_KEYS)}
        kept_control = read_control(kept / "control")
        assert kept_control.fenced_reason is not None and kept_control.role == "primary"
        assert kept_control.snapshot is not None and (kept / "base" / kept_control.snapshot).exists()


def test_a_rebootstrap_killed_before_its_base_backup_resumes_it_at_the_next_start(node_factory: MakeNode) -> None:
    old_primary, new_primary, old_wal = fail_over(node_factory, "rebootstrap")
    answer = ask_rejoin(old_primary, new_primary)
    new_primary.kill()  # the base backup the rejoin restart begins cannot complete

    def retries() -> int:
        return old_primary.log().count("base backup failed; retrying")

    wait_until(lambda: retries() >= 1, 60, "the restarted node to try its base backup")
    old_primary.kill()
    control = read_control(old_primary.data_dir / "control")
    assert (control.state, control.role, control.primary_url) == (STATE_NEEDS_BASE_BACKUP, "replica", new_primary.url)

    # Started again as the former primary was (no --replica-of): control says where the data comes from.
    assert "--replica-of" not in old_primary.extra_args
    tried = retries()
    old_primary.spawn()
    wait_until(lambda: retries() > tried, 60, "the next start to resume the base backup")
    new_primary.restart()
    old_primary.wait_ready()
    check_rejoined(old_primary, new_primary)
    assert old_primary.log().count("initialised a new data directory") == 1  # its first start only
    kept = Path(answer["kept_in"])
    assert wal_files(kept) == old_wal
    assert divergent_keys_in(kept / "WAL") == {f"divergent:{n}" for n in range(DIVERGENT_KEYS)}
