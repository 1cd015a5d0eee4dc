"""A replica's feedback is held to what the primary wrote (issue 10 item 3): a position beyond the
primary's WAL end (2^62 here; 2^70 was accepted once, and is refused as out of range since) is
refused with a code, and the slot keeps what it had."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kvstore.node.wal.format import parse_lsn
from support.harness import MakeNode
from support.replication import REPLICATION_CREDENTIALS

POSITIONS = ("restart_lsn", "write_lsn", "flush_lsn", "apply_lsn", "timeline")


def slot_positions(admin: httpx.Client, name: str) -> dict[str, Any]:
    row = next(row for row in admin.get("/v1/status").json()["replicas"] if row["name"] == name)
    return {field: row[field] for field in POSITIONS}


@pytest.mark.parametrize("field", ["write_lsn", "flush_lsn", "apply_lsn"])
def test_feedback_beyond_the_wal_end_is_refused_and_the_slot_unchanged(node_factory: MakeNode, field: str) -> None:
    node = node_factory("p", env=REPLICATION_CREDENTIALS, args=["--name", "p"]).start()
    login = httpx.post(f"{node.url}/v1/auth/login", json={"username": "replicator", "password": "replicator-password"})
    headers = {"authorization": f"Bearer {login.json()['token']}"}
    with httpx.Client(base_url=node.url, headers=headers, timeout=30) as replicator, node.client() as admin:
        assert replicator.get("/v1/replication/basebackup", params={"slot": "r1"}).status_code == 200  # makes the slot
        end_lsn = parse_lsn(admin.get("/v1/status").json()["lsn"]["insert_lsn"])
        honest = {"slot": "r1", "timeline": 1, "write_lsn": end_lsn, "flush_lsn": end_lsn, "apply_lsn": end_lsn}
        assert replicator.post("/v1/replication/feedback", json=honest).status_code == 200  # the end itself is fine
        before = slot_positions(admin, "r1")
        for beyond in (end_lsn + 1, 2**62, 2**63 - 1):
            answer = replicator.post("/v1/replication/feedback", json={**honest, field: beyond})
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "lsn_beyond_wal_end"
            assert "beyond this primary's WAL end" in answer.json()["error"]["message"]
            assert slot_positions(admin, "r1") == before
