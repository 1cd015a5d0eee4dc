"""GET /v1/watch on a replica: the primary's changes, once applied there, with the primary's
LSNs, and a watch resumed on the replica after an LSN seen on the primary misses nothing."""

from __future__ import annotations

from support.harness import MakeNode
from support.replication import assert_converged, make
from support.watching import Watch


def test_a_replica_streams_the_changes_it_applies_with_the_primarys_lsns(node_factory: MakeNode) -> None:
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    assert_converged(primary, replica)
    on_primary = Watch(primary.client(), {"prefix": "app:"})
    on_replica = Watch(replica.client(), {"prefix": "app:"})
    assert on_primary.status == on_replica.status == 200
    with primary.client() as client:
        assert client.put("/v1/kv/app:a", content=b"1").status_code == 201
        ops = [{"op": "set", "key": "app:b", "value": "2"}, {"op": "del", "key": "app:a"}]
        assert client.post("/v1/txn", json={"ops": ops}).status_code == 200
    seen_on_primary = on_primary.events(3)
    assert on_replica.events(3) == seen_on_primary
    on_primary.close()
    on_replica.close()
    resumed = Watch(replica.client(), {"prefix": "app:", "from_lsn": seen_on_primary[0]["lsn"]})
    assert resumed.events(2) == seen_on_primary[1:]
    resumed.close()
