"""`X-KV-Min-LSN` (read your writes) against real nodes: bounded, never a way to freeze a node.

A read that waited for an LSN no write had left its waiter at the head of the engine's
queue, and from then on no write was answered until a restart.
"""

from __future__ import annotations

from support.replication import REPLICATION_CREDENTIALS
from support.sessions import session

NEVER_WRITTEN = "FFFFFFFF/FFFFFFFF"


def test_a_primary_refuses_an_lsn_beyond_its_wal_and_keeps_answering_writes(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()
    with node.client() as admin:
        assert admin.post("/v1/admin/users", json={"name": "nobody", "password": "nobody-password"}).status_code == 201
        for path, params in (("/v1/kv/k", {}), ("/v1/kv", {"prefix": "x"})):
            refused = admin.get(path, params=params, headers={"x-kv-min-lsn": NEVER_WRITTEN})
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == "lsn_beyond_wal_end"
            assert "WAL end" in refused.json()["error"]["message"]
        # A user with no roles is refused before anything waits.
        with session(node, "nobody", "nobody-password") as nobody:
            forbidden = nobody.get("/v1/kv", params={"prefix": "x"}, headers={"x-kv-min-lsn": NEVER_WRITTEN})
            assert forbidden.status_code == 403, forbidden.text
        written = admin.put("/v1/kv/after", content=b"1", timeout=5)
        assert written.status_code == 201, written.text
        # The LSN a write answered with is fine, at once.
        lsn = written.headers["x-kv-commit-lsn"]
        assert admin.get("/v1/kv/after", headers={"x-kv-min-lsn": lsn}, timeout=5).content == b"1"
        assert admin.get("/metrics").text.count("kvstore_engine_commit_waiters 0.0") == 1


def test_a_replica_read_that_timed_out_does_not_hold_back_later_ones(node_factory) -> None:  # type: ignore[no-untyped-def]
    primary = node_factory("p", env=REPLICATION_CREDENTIALS, args=["--name", "p"]).start()
    replica = node_factory(
        "r1",
        env={**REPLICATION_CREDENTIALS, "KVSTORE_MIN_LSN_WAIT_S": "0.5"},
        args=["--name", "r1", "--replica-of", primary.url],
    ).start()
    with primary.client() as writer, replica.client() as reader:
        # A replica waits (bounded) even for an LSN it has not heard of: its primary may have it already.
        timed_out = reader.get("/v1/kv/k", headers={"x-kv-min-lsn": NEVER_WRITTEN})
        assert timed_out.status_code == 504, timed_out.text
        for n in range(5):
            lsn = writer.put(f"/v1/kv/ryw:{n}", content=str(n)).headers["x-kv-commit-lsn"]
            read = reader.get(f"/v1/kv/ryw:{n}", headers={"x-kv-min-lsn": lsn}, timeout=10)
            assert read.status_code == 200 and read.text == str(n), read.text
