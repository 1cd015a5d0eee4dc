"""Restore across a promotion: the archive holds the old primary's timeline 1 (which went on past
the switch) and the promoted replica's timeline 2. Restoring timeline 2 uses timeline 1's WAL
only up to the switch; restoring timeline 1 keeps what only the old primary wrote."""

from __future__ import annotations

from pathlib import Path

from kvstore.node.archive.access import Stores
from kvstore.node.archive.layout import parse_segment
from kvstore.node.archive.restore import Target, restore
from support.archives import archive_data_dir
from support.harness import MakeNode, NodeProcess
from support.replication import VALUE, admin_get, assert_converged, make


def _write(node: NodeProcess, prefix: str, count: int) -> None:
    with node.client() as client:
        for index in range(count):
            assert client.put(f"/v1/kv/{prefix}:{index}", content=VALUE).status_code == 201


def test_restore_follows_the_promoted_timeline_and_cuts_the_old_primary_at_the_switch(
    node_factory: MakeNode, tmp_path: Path
) -> None:
    url = f"file://{tmp_path / 'archive'}"
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    _write(primary, "a", 20)
    with primary.client() as client:
        assert client.post("/v1/admin/snapshots/export", json={"to": url}).status_code == 200
    _write(primary, "b", 20)
    assert_converged(primary, replica)
    replica.kill()
    _write(primary, "lost", 10)  # only the old primary's timeline 1 has these
    primary.kill()
    replica.restart()
    with replica.client() as client:
        promoted = client.post("/v1/admin/promote")
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["timeline"] == 2
    _write(replica, "c", 20)
    promoted_digest = admin_get(replica, "/v1/admin/digest")
    replica.kill()

    archive_data_dir(primary.data_dir, url)
    store = archive_data_dir(replica.data_dir, url)
    segments = [s for info in store.list("wal/") if (s := parse_segment(info.name)) is not None]
    assert any(s.timeline == 2 for s in segments)
    # Two copies of timeline 1's last segment: the promoted replica's ends at the switch.
    on_one = [s for s in segments if s.timeline == 1]
    assert len({s.start_lsn for s in on_one}) < len(on_one)

    latest = restore(Stores.open(url, None), tmp_path / "restored-latest", Target())
    assert (latest.parent_timeline, latest.timeline) == (2, 3)
    node = node_factory("restored-latest").start()
    restored = admin_get(node, "/v1/admin/digest")
    assert (restored["digest"], restored["keys"]) == (promoted_digest["digest"], promoted_digest["keys"])
    with node.client() as client:
        assert client.get("/v1/kv/lost:0").status_code == 404
        assert client.put("/v1/kv/d:0", content=b"1").status_code == 201

    old = restore(Stores.open(url, None), tmp_path / "restored-old", Target(timeline=1))
    assert (old.parent_timeline, old.timeline) == (1, 3)
    node = node_factory("restored-old").start()
    with node.client() as client:
        assert client.get("/v1/kv/lost:9").status_code == 200
        assert client.get("/v1/kv/c:0").status_code == 404
