"""The rejoin plan (replication/rejoin.py `plan_rejoin`): follow, rewind or a new base backup,
chosen from this node's timeline, WAL end and snapshot against the new primary's history. In
process: the new primary's answers are stubbed where the node would ask it over HTTP (its
system identifier and IDENTIFY); cluster/test_rejoin_plans.py runs the same plans on real nodes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from kvstore.node.checkpoint import Checkpointer
from kvstore.node.config import Settings
from kvstore.node.control import (
    ROLE_PRIMARY,
    ROLE_REPLICA,
    STATE_NEEDS_BASE_BACKUP,
    STATE_RUNNING,
    Control,
    read_control,
    write_control,
)
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.errors import BadRequest
from kvstore.replication import peers
from kvstore.replication import rejoin as rejoining
from kvstore.replication.protocol import Identity
from kvstore.replication.timelines import Switch

SYSTEM = 7310000000000000001
PRIMARY_URL = "http://127.0.0.1:9"
CREDENTIALS = Settings(replication_user="replicator", replication_password="replicator-password")
# Our timeline 1 ended at 5000 on the new primary, which went on as timeline 2.
BRANCHED_AT_5000 = (Switch(parent=1, switch_lsn=5000, time_ms=0),)


@dataclass
class Writer:
    end_lsn: int


@dataclass
class EngineStub:
    writer: Writer


@dataclass
class CheckpointerStub:
    control: Control


@dataclass
class RejoiningNode:
    """What `plan_rejoin` is handed, and the restart the roles ask for with its plan."""

    datadir: DataDir
    checkpointer: CheckpointerStub
    engine: EngineStub
    timeline: int = 1
    is_replica: bool = False
    settings: Settings = CREDENTIALS
    restarts: list[tuple[str, Any]] = field(default_factory=list)

    def request_restart(self, reason: str, before_exec: Any = None) -> None:
        self.restarts.append((reason, before_exec))


def node_at(
    tmp_path: Path, end_lsn: int, snapshot: str | None = None, redo_lsn: int = 0, consistent_lsn: int = 0, **kw: Any
) -> RejoiningNode:
    control = Control(
        SYSTEM, kw.get("timeline", 1), redo_lsn, snapshot, 0, STATE_RUNNING, consistent_lsn=consistent_lsn
    )
    return RejoiningNode(DataDir(tmp_path), CheckpointerStub(control), EngineStub(Writer(end_lsn)), **kw)


@pytest.fixture
def primary(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the new primary says of itself; a test changes it before the rejoin."""
    said: dict[str, Any] = {
        "system_identifier": SYSTEM,
        "timeline": 2,
        "role": "primary",
        "write_lsn": 9000,
        "history": BRANCHED_AT_5000,
        "fenced": None,
    }

    async def confirmed(client: httpx.AsyncClient, url: str, system_identifier: int) -> None:
        assert url == PRIMARY_URL

    async def identify(client: httpx.AsyncClient, url: str, logins: peers.PeerLogins) -> Identity:
        return Identity(**said)

    monkeypatch.setattr(rejoining, "confirm_cluster_node", confirmed)
    monkeypatch.setattr(peers, "identify", identify)
    return said


def rejoin(node: RejoiningNode, url: str = PRIMARY_URL) -> dict[str, Any]:
    """As `Roles.rejoin`: the plan, then the restart that carries it out."""
    engine, checkpointer = cast(Engine, node.engine), cast(Checkpointer, node.checkpointer)
    plan = asyncio.run(rejoining.plan_rejoin(node.settings, node.datadir, engine, checkpointer, node.is_replica, url))
    node.request_restart(plan.restart_reason, plan.carry_out)
    return plan.document


def refused(node: RejoiningNode) -> str:
    with pytest.raises(BadRequest) as refusal:
        rejoin(node)
    assert node.restarts == []  # nothing happens to a node that was refused
    return str(refusal.value)


@pytest.mark.usefixtures("primary")
def test_wal_that_ends_before_the_branch_is_followed_as_it_is(tmp_path: Path) -> None:
    node = node_at(tmp_path, end_lsn=4000)
    plan = rejoin(node)
    assert (plan["action"], plan["switch_lsn"], plan["end_lsn"]) == ("follow", "0/1388", "0/FA0")
    assert (plan["divergent_bytes"], plan["kept_in"], plan["timeline"], plan["primary_timeline"]) == (0, None, 1, 2)
    assert [reason for reason, _ in node.restarts] == [f"rejoin {PRIMARY_URL}: follow"]
    assert rejoin(node_at(tmp_path, end_lsn=5000))["action"] == "follow"  # ends exactly at the branch


@pytest.mark.usefixtures("primary")
def test_wal_beyond_the_branch_is_rewound_when_the_snapshot_is_consistent_before_it(tmp_path: Path) -> None:
    for snapshot, redo_lsn, consistent_lsn in ((None, 0, 0), ("snapshot_1.chk", 1000, 5000)):
        plan = rejoin(node_at(tmp_path, 6000, snapshot, redo_lsn, consistent_lsn))
        assert (plan["action"], plan["divergent_bytes"]) == ("rewind", 1000)
        kept_in = Path(plan["kept_in"])
        assert kept_in.parent == tmp_path / "diverged" and kept_in.name.startswith("00000001-0000000000001388-")


@pytest.mark.usefixtures("primary")
def test_a_snapshot_that_needs_wal_beyond_the_branch_means_a_new_base_backup(tmp_path: Path) -> None:
    plan = rejoin(node_at(tmp_path, 6000, "snapshot_1.chk", 1000, consistent_lsn=5500))
    assert (plan["action"], plan["divergent_bytes"]) == ("rebootstrap", 1000)


def test_a_replica_on_the_primarys_timeline_follows_it_from_its_wal_end(
    tmp_path: Path, primary: dict[str, Any]
) -> None:
    primary.update(timeline=1, history=())
    plan = rejoin(node_at(tmp_path, 6000, is_replica=True))
    assert (plan["action"], plan["switch_lsn"], plan["divergent_bytes"]) == ("follow", "0/1770", 0)
    # A primary on the same timeline is a peer, not a newer primary.
    assert refused(node_at(tmp_path, 6000)) == f"{PRIMARY_URL} is on timeline 1, not newer than this node's 1"


@pytest.mark.parametrize(
    ("says", "reason"),
    [
        ({"timeline": 1}, "is on timeline 1, not newer than this node's 3"),
        (
            {"timeline": 4, "history": (Switch(1, 100, 0), Switch(2, 200, 0))},
            "does not descend from this node's timeline 3",
        ),
        ({"system_identifier": SYSTEM + 1}, f"belongs to another system ({SYSTEM + 1})"),
        ({"role": "replica"}, "is not an unfenced primary (replica, None)"),
        ({"fenced": "timeline 5 exists"}, "is not an unfenced primary (primary, timeline 5 exists)"),
    ],
)
def test_a_primary_this_node_cannot_follow_is_refused(
    tmp_path: Path, primary: dict[str, Any], says: dict[str, Any], reason: str
) -> None:
    primary.update(timeline=4, history=(Switch(1, 50, 0), Switch(3, 300, 0)))  # timeline 3 ended at 300
    primary.update(says)
    assert reason in refused(node_at(tmp_path, 6000, timeline=3))


@pytest.mark.usefixtures("primary")
def test_rejoin_needs_the_replication_credentials_and_a_bare_node_url(tmp_path: Path) -> None:
    assert "needs KVSTORE_REPLICATION_USER" in refused(node_at(tmp_path, 4000, settings=Settings()))
    assert "without a path" in refused_url(tmp_path, f"{PRIMARY_URL}/v1/status")


def refused_url(tmp_path: Path, url: str) -> str:
    with pytest.raises(BadRequest) as refusal:
        rejoin(node_at(tmp_path, 4000), url)
    return str(refusal.value)


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("http://127.0.0.1:9", "http://127.0.0.1:9"),
        (" https://Node-2.example:8443/ ", "https://node-2.example:8443"),
        ("http://[::1]:80", "http://[::1]:80"),
    ],
)
def test_a_rejoin_target_is_a_base_url(given: str, target: str) -> None:
    assert rejoining.rejoin_target(given) == target


@pytest.mark.parametrize(
    "given",
    [
        "ftp://h:1",
        "http://",
        "http://u:p@h:1",
        "http://u@h:1",
        "http://h:1/x",
        "http://h:1?q",
        "http://h:1#f",
        "http://h:x",
    ],
)
def test_a_rejoin_target_with_more_than_a_base_url_is_refused(given: str) -> None:
    with pytest.raises(BadRequest, match="node's base URL"):
        rejoining.rejoin_target(given)


def started_datadir(tmp_path: Path, control: Control) -> DataDir:
    datadir = DataDir(tmp_path)
    for folder in (datadir.wal, datadir.base):
        folder.mkdir()
    (datadir.wal / "0000000000000000.wal").write_bytes(b"wal")
    (datadir.base / "snapshot_1.chk").write_bytes(b"snapshot")
    write_control(datadir.control, control)
    return datadir


def carried_out(node: RejoiningNode) -> Control:
    """The restart's own step, run as the restart would: the control file it leaves."""
    ((_, before_exec),) = node.restarts
    before_exec()
    return read_control(node.datadir.control)


@pytest.mark.usefixtures("primary")
def test_following_leaves_the_data_and_turns_the_node_into_the_primarys_replica(tmp_path: Path) -> None:
    node = node_at(tmp_path, 4000)
    node.datadir = started_datadir(tmp_path, node.checkpointer.control.replace(fenced_reason="timeline 2 exists"))
    rejoin(node)
    control = carried_out(node)
    assert (control.role, control.primary_url, control.fenced_reason) == (ROLE_REPLICA, PRIMARY_URL, None)
    assert (control.state, control.snapshot) == (STATE_RUNNING, None)
    assert not (tmp_path / "diverged").exists()


@pytest.mark.usefixtures("primary")
def test_a_rebootstrap_keeps_the_old_data_aside_and_asks_for_a_base_backup(tmp_path: Path) -> None:
    node = node_at(tmp_path, 6000, "snapshot_1.chk", 1000, consistent_lsn=5500)
    assert node.checkpointer.control.role == ROLE_PRIMARY
    node.datadir = started_datadir(tmp_path, node.checkpointer.control)
    kept_in = Path(rejoin(node)["kept_in"])
    control = carried_out(node)
    assert (control.role, control.state, control.snapshot) == (ROLE_REPLICA, STATE_NEEDS_BASE_BACKUP, None)
    assert (control.redo_lsn, control.consistent_lsn, control.replica_start_lsn) == (0, 0, None)
    assert (kept_in / "WAL" / "0000000000000000.wal").read_bytes() == b"wal"
    assert (kept_in / "base" / "snapshot_1.chk").read_bytes() == b"snapshot"
    assert read_control(kept_in / "control").role == ROLE_PRIMARY  # the control it had, as it was
