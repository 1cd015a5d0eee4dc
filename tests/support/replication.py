"""Primaries and replicas for the cluster tests: the replication settings every node gets, and
checks that compare nodes."""

from __future__ import annotations

from typing import Any

from support.harness import MakeNode, NodeProcess
from support.waiting import wait_until

# The replication user initdb creates, which every node logs in to its peers as.
REPLICATION_CREDENTIALS = {
    "KVSTORE_REPLICATION_USER": "replicator",
    "KVSTORE_REPLICATION_PASSWORD": "replicator-password",
}
# Small WAL segments and frequent checkpoints, so a test's few thousand writes span several
# segments and recycle some; a quick keepalive, so a dead link is noticed within a test.
REPLICATION_ENV = {
    **REPLICATION_CREDENTIALS,
    "KVSTORE_WAL_SEGMENT_SIZE_BYTES": "65536",
    "KVSTORE_CHECKPOINT_WAL_BYTES": "262144",
    "KVSTORE_REPLICATION_KEEPALIVE_S": "0.2",
}
VALUE = "v" * 100


def make(node_factory: MakeNode, name: str, replica_of: str | None = None, **env: str) -> NodeProcess:
    args = ["--name", name] + (["--replica-of", replica_of] if replica_of else [])
    return node_factory(name, env={**REPLICATION_ENV, **env}, args=args)


def admin_get(node: NodeProcess, path: str) -> Any:
    with node.client() as client:
        response = client.get(path)
        assert response.status_code == 200, response.text
        return response.json()


def assert_converged(primary: NodeProcess, *replicas: NodeProcess, timeout_s: float = 30.0) -> str:
    """Every replica's digest equals the primary's at the same applied LSN; returns the digest."""
    expected: dict[str, Any] = {}

    def equal() -> bool:
        expected.update(admin_get(primary, "/v1/admin/digest"))
        return all(
            {k: admin_get(r, "/v1/admin/digest")[k] for k in ("digest", "apply_lsn")}
            == {k: expected[k] for k in ("digest", "apply_lsn")}
            for r in replicas
        )

    wait_until(equal, timeout_s, "replicas to converge")
    return str(expected["digest"])
