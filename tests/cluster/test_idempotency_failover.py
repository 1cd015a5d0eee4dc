"""An INCR retried with its Idempotency-Key counts once across a failover: the remembered answer
rides in the write's own WAL record to the replica (a dropped connection on one node:
tests/node/test_idempotency.py)."""

from __future__ import annotations

import uuid

import httpx

from kvstore.node.wal.format import parse_lsn
from support.replication import admin_get, make
from support.waiting import wait_until


def test_an_incr_retried_on_the_promoted_replica_counts_once(node_factory) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r", replica_of=primary.url).start()
    idem = {"idempotency-key": str(uuid.uuid4())}
    with primary.client() as client:
        first = client.post("/v1/kv/failover-counter/incr?by=7", headers=idem)
    assert first.status_code == 200, first.text
    commit_lsn = parse_lsn(first.headers["x-kv-commit-lsn"])
    wait_until(
        lambda: parse_lsn(admin_get(replica, "/v1/status")["lsn"]["apply_lsn"]) >= commit_lsn,
        60,
        "the replica to apply the INCR",
    )
    with replica.client() as client:  # a replica takes no write, and replays none either
        assert client.post("/v1/kv/failover-counter/incr?by=7", headers=idem).status_code == 421

    primary.kill()
    promoted = httpx.post(
        f"{replica.url}/v1/admin/promote", headers={"authorization": f"Bearer {replica.token()}"}, timeout=30
    )
    assert promoted.status_code == 200, promoted.text

    with replica.client() as client:
        retried = client.post("/v1/kv/failover-counter/incr?by=7", headers=idem)
        assert retried.status_code == 200, retried.text
        assert retried.content == first.content  # the first answer: its value, version, commit LSN, timeline
        for header in ("etag", "x-kv-commit-lsn", "x-kv-timeline"):
            assert retried.headers[header] == first.headers[header]
        assert retried.headers["idempotent-replayed"] == "true"
        assert client.get("/v1/kv/failover-counter").content == b"7"
        # The new primary writes on: the same key for another request is refused, a new key counts.
        assert client.post("/v1/kv/failover-counter/incr?by=1", headers=idem).status_code == 422
        fresh = client.post("/v1/kv/failover-counter/incr?by=7", headers={"idempotency-key": str(uuid.uuid4())})
        assert fresh.json()["value"] == 14
