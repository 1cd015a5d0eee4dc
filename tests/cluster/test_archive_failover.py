"""Archiving across a failover, with the archiver itself on every node: the promoted replica
archives its new timeline (and its history); the old primary, back and fenced, archives nothing;
a restore to a time after the switch follows the history into timeline 2."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from kvstore.node.archive.access import Stores
from kvstore.node.archive.layout import parse_segment
from kvstore.node.archive.restore import Target, parse_time, restore
from kvstore.node.archive.store import open_store
from kvstore.node.wal.format import parse_lsn
from support.harness import MakeNode, NodeProcess, free_port
from support.replication import admin_get, assert_converged, make
from support.waiting import wait_until


def _write(node: NodeProcess, prefix: str, count: int) -> int:
    lsn = 0
    with node.client() as client:
        for index in range(count):
            answer = client.put(f"/v1/kv/{prefix}:{index}", content=b"v%d" % index)
            assert answer.status_code == 201, answer.text
            lsn = parse_lsn(answer.json()["commit_lsn"])
    return lsn


def _archived(node: NodeProcess) -> int:
    archived = admin_get(node, "/v1/status")["archive"]["archived_lsn"]
    return 0 if archived is None else parse_lsn(archived)


def _digest(node: NodeProcess) -> tuple[str, int]:
    document = admin_get(node, "/v1/admin/digest")
    return document["digest"], document["keys"]


def test_a_promoted_replica_archives_its_timeline_and_a_fenced_primary_nothing(
    node_factory: MakeNode, tmp_path: Path
) -> None:
    url = f"file://{tmp_path / 'archive'}"
    archive = {"KVSTORE_ARCHIVE_URL": url, "KVSTORE_ARCHIVE_TIMEOUT_S": "1", "KVSTORE_WAL_SEGMENT_SIZE_BYTES": "16384"}
    ports = {name: free_port() for name in ("p", "r1")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    primary = make(node_factory, "p", **archive)
    primary.port, primary.url = ports["p"], urls["p"]
    primary.extra_args += ["--peers", urls["r1"]]
    primary.start()
    replica = make(node_factory, "r1", replica_of=urls["p"], **archive)
    replica.port, replica.url = ports["r1"], urls["r1"]
    replica.extra_args += ["--peers", urls["p"]]
    replica.start()
    assert admin_get(replica, "/v1/status")["archive"]["state"].startswith("replica")

    last = _write(primary, "before", 50)
    wait_until(lambda: _archived(primary) >= last, 60, "the old primary archived its writes")
    assert_converged(primary, replica)
    primary.kill()
    with replica.client() as client:
        promoted = client.post("/v1/admin/promote")
        assert promoted.status_code == 200, promoted.text
    _write(replica, "after-a", 30)
    time.sleep(0.01)
    target = datetime.now(UTC).isoformat(timespec="milliseconds")
    at_target = _digest(replica)
    time.sleep(0.01)
    last = _write(replica, "after-b", 30)
    wait_until(lambda: _archived(replica) >= last, 60, "the promoted replica archived its timeline")
    latest = _digest(replica)

    store = open_store(url)
    assert {info.name for info in store.list("timelines/")} == {"timelines/00000002.history"}
    on_two = [s for info in store.list("wal/") if (s := parse_segment(info.name)) is not None and s.timeline == 2]
    assert on_two

    # The old primary comes back, learns of timeline 2 from its peer, and is fenced: it archives nothing.
    before = {info.name for info in store.list()}
    primary.start()
    wait_until(lambda: admin_get(primary, "/v1/status")["state"] == "fenced", 60, "the old primary fenced")
    assert admin_get(primary, "/v1/status")["archive"] == {"url": url, "state": "fenced: archives nothing"}
    time.sleep(3)  # three archive timeouts: a running archiver would have closed and pushed a segment
    assert {info.name for info in store.list()} == before

    at_time = restore(Stores.open(url, None), tmp_path / "at-target", Target(time_ms=parse_time(target)))
    assert (at_time.parent_timeline, at_time.timeline) == (2, 3)
    node = node_factory("at-target")
    node.data_dir = tmp_path / "at-target"
    node.start()
    assert _digest(node) == at_target
    node.stop()

    newest = restore(Stores.open(url, None), tmp_path / "latest", Target())
    node = node_factory("latest")
    node.data_dir = tmp_path / "latest"
    node.start()
    assert _digest(node) == latest and newest.timeline == 3
